"""Turn the fleet's Ansible YAML inventory into Prometheus file_sd targets: one entry per host.

    python -m deploy.prometheus.targets deploy/ansible/inventory.yml --out deploy/prometheus/targets/fleet.json

Each host's scrape address is `mnist_edge_serve_host` (default: `ansible_host`, else the host's
name) and `mnist_edge_serve_port` (default 8080), resolved as Ansible resolves variables: a host's
own vars over its groups', a child group's over its parent's. Each target is labelled with the
host's inventory name (`device`) and its groups, so an alert names the Pi as Ansible does.
"""

import argparse
import json
import pathlib
import sys

DEFAULT_SERVE_PORT = 8080


class InventoryError(ValueError):
    """The inventory is not an Ansible YAML inventory this script can read."""


def _mapping(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def hosts_with_vars(inventory, source="inventory"):
    """{host name: (merged vars, [group names])} from a parsed YAML inventory (a dict with `all` or groups)."""
    inventory = _mapping(inventory, source)
    groups = inventory if "all" not in inventory else {"all": inventory["all"]}
    hosts = {}

    def walk(name, group, inherited, lineage):
        group = _mapping(group, f"{source}: group '{name}'")
        unknown = set(group) - {"hosts", "vars", "children"}
        if unknown:
            raise InventoryError(f"{source}: group '{name}' has unknown key(s) {', '.join(sorted(unknown))}")
        merged = {**inherited, **_mapping(group.get("vars"), f"{source}: group '{name}' vars")}
        lineage = lineage + ([] if name == "all" else [name])
        for host, host_vars in _mapping(group.get("hosts"), f"{source}: group '{name}' hosts").items():
            own = _mapping(host_vars, f"{source}: host '{host}'")
            previous_vars, previous_groups = hosts.get(host, ({}, []))
            hosts[host] = ({**previous_vars, **merged, **own}, previous_groups + [g for g in lineage if g not in previous_groups])
        for child, child_group in _mapping(group.get("children"), f"{source}: group '{name}' children").items():
            walk(child, child_group, merged, lineage)

    for name, group in groups.items():
        walk(name, group, {}, [])
    if not hosts:
        raise InventoryError(f"{source}: lists no hosts")
    return hosts


def file_sd_targets(inventory, source="inventory"):
    """The file_sd document (a list of {targets, labels}) for a parsed inventory, hosts in name order."""
    entries = []
    for host, (variables, groups) in sorted(hosts_with_vars(inventory, source).items()):
        address = variables.get("mnist_edge_serve_host") or variables.get("ansible_host") or host
        port = variables.get("mnist_edge_serve_port", DEFAULT_SERVE_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InventoryError(f"{source}: host '{host}': mnist_edge_serve_port must be 1..65535, got {port!r}")
        host_part = f"[{address}]" if ":" in str(address) else str(address)
        entries.append({"targets": [f"{host_part}:{port}"], "labels": {"device": host, "groups": ",".join(groups)}})
    return entries


def read_inventory(path):
    """Parse the YAML inventory at `path`; InventoryError naming the file when it is not readable YAML."""
    import yaml

    try:
        return yaml.safe_load(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InventoryError(f"{path}: not a readable YAML inventory: {str(error).splitlines()[0]}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.prometheus.targets", description=__doc__.splitlines()[0])
    parser.add_argument("inventory", type=pathlib.Path, help="Ansible inventory in YAML")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="file_sd JSON to write (default: standard output)")
    arguments = parser.parse_args(argv)
    try:
        targets = file_sd_targets(read_inventory(arguments.inventory), str(arguments.inventory))
    except InventoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(targets, indent=2) + "\n"
    if arguments.out is None:
        sys.stdout.write(text)
    else:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = arguments.out.with_name(arguments.out.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(arguments.out)  # Prometheus never reads a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
