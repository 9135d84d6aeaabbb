"""What the AWS adapters' URLs share (`s3://...`, `kms:...`): options in the query, an optional endpoint."""

from urllib.parse import parse_qsl, urlsplit


def url_options(url: str, *, allowed: frozenset[str], what: str) -> dict[str, str]:
    """The query options of `url`; an unknown or repeated one is refused rather than ignored, so a misspelt one never
    goes unnoticed, and an `endpoint` must be an http(s)://host[:port] URL. `what` names the adapter in errors."""
    query = urlsplit(url).query
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name not in allowed:
            raise ValueError(f"unknown {what} URL option {name!r}; options are {', '.join(sorted(allowed))}")
        if name in options:
            raise ValueError(f"the {what} URL option {name!r} is given twice in {url!r}")
        options[name] = value
    endpoint = options.get("endpoint")
    if endpoint and (urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).hostname):
        raise ValueError(f"a {what} endpoint is an http(s)://host[:port] URL, got {endpoint!r}")
    return options
