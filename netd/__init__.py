"""Network service in the style of Neutron: networks and ports built with pyroute2."""
