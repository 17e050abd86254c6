"""View models and HTML assembly for the pages: routes fetch with crud and hand the rows to a presenter."""
