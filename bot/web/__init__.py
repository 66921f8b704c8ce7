"""Every HTTP surface that is not a WeCom callback: staff lead API, ingest API, tracked links, health, metrics."""
