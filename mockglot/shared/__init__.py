"""State that several workers and machines share, kept in Redis (or Valkey) when `--state` names one."""
