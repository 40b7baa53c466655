"""Error tracking: reports made from exceptions and messages, scrubbed and grouped, and the
groups' lifecycle (resolve, ignore, regression) kept in storage for every worker."""
