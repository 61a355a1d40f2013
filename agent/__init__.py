"""archer's controller: the search loop, its proposers, the git-backed history and the CLI."""
