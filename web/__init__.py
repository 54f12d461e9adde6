"""HTTP and the shell: the Quart app, its handlers and the request pipeline, the `relaybox` command,
configuration, and the composition root that builds the actor tree."""
