"""The tasks table: the model, the one transition function, writes (services) and reads (selectors),
input checks, the update stream and its writer, and dispatch to the nodes."""
