"""Swift-style consistent-hash ring: builder, ring file format, runtime lookups."""
