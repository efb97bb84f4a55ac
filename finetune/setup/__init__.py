"""The one place a run is assembled (recipe -> architecture -> task -> data -> base model +
method -> accelerator -> optimizer and scheduler), in named steps; commands call it, nothing
below the commands calls up into it."""
