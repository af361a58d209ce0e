"""Prometheus for the fleet: scrape config, alert rules, and file_sd targets made from the inventory."""
