"""State that several workers and machines share, kept in Redis (or Valkey) when `--state` names one: `connect.py`
checks the store is there, `coordinator.py` shares the state, `middleware.py` holds it around each request."""
