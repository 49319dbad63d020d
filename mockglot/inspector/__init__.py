"""The inspector: `/_mockglot/events` (what happens, as Server-Sent Events) and `/_mockglot/ui` (a browser view of
it). Both are protected like the rest of the control plane."""
