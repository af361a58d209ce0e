"""Fleet deployment: the Ansible inventory and rollout, Prometheus scrape config and alerts."""
