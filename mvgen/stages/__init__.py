"""One module per stage. Each backend is a plain class built from its config group's ``_target_``;
stages read and write files and know nothing about Hydra."""
