"""RoboCasa GR1 tabletop evaluation client for the policy server."""
