"""The web for `web_search`: the search port and its SearXNG adapter, the SSRF guard, and the page fetcher."""
