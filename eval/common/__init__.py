"""What the simulator clients (SimplerEnv WidowX, RoboCasa GR1) share: request pieces, image resizing, the
resumable results file and the results table. numpy only, so it runs in any simulator's environment."""
