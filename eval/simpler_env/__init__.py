"""SimplerEnv WidowX (Bridge) evaluation client for the policy server."""
