"""Identity service in the style of Keystone v3: users, projects, tokens, catalog."""
