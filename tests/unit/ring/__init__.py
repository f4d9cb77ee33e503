"""Tests of the ring: builder, files, runtime lookups and the cairn-ring CLI."""
