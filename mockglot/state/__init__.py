"""Server state: everything the API remembers, with no knowledge of HTTP."""
