"""What pi-check decides from the device and x86 results, and the table it prints.

The rules, each a failure line when broken:
- every run exits 0 on the device and on x86;
- eval: each model's accuracy and every top-1 label equal x86's (same backend, same version);
  the int8 outputs equal x86's value by value, except through LiteRT/tflite-runtime's default
  (XNNPACK) kernels, whose arm64 and x86 kernels round differently: at most --max-steps there;
  on 64-bit rows XNNPACK is active on the device (without /sys LiteRT quietly drops it);
- the numpy engine: bit-identical to x86 running it AND to x86 LiteRT's reference kernels;
- reference kernels (BUILTIN_REF, plain integer C++): bit-identical to x86, so the emulator
  computes integers exactly as the hardware does;
- predict on PNG photos: x86's labels;
- serve: ready (its self-check passed) with x86's self-check figures and model sha256; every PNG
  photo posted to /api/predict answered 200 with x86's label, counted in /metrics; exit 0 on SIGTERM;
- install (no x86 twin; tests/test_install_proof.py is that side), three signed bundles in order:
  the trained one switched and through probation (exit 0; "int8-float agreement 100.00% over the
  last W shadowed requests" where serve shadows, "readiness checked only" where it cannot); the
  outlier export with the trained tolerance refused at the gate with eval's FAILED line (exit 3);
  the outlier export with its gate opened switched, then "rolled back to" the trained version
  (exit 4): on its live agreement below serve's threshold where serve shadows, on /readyz's 503
  (the device's serve --tolerance refusing it at start-up) where it cannot. `current` is the
  trained version after each of the three, and after the last the service runs it again;
- a row's RSS limit (the ARMv6 row: a Pi Zero has 512 MB): every eval's peak RSS, qemu included;
- the emulated /proc/cpuinfo names the CPU asked for (its part number, or for ARMv6 its model).
"""

import numpy as np

from pi import platforms, tasks

XNNPACK_BACKENDS = ("litert", "tflite-runtime")


def compare_outputs(ours, theirs):
    """(identical, values differing, images differing, largest difference in output steps)."""
    if ours is None or theirs is None or ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return False, None, None, float("inf")
    difference = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return (not difference.any(), int(np.count_nonzero(difference)), int(np.count_nonzero(difference.any(axis=1))),
            float(difference.max()))


class Verdict:
    """Collects table lines, notes and failures for the rows checked."""

    def __init__(self, max_steps, truth):
        self.max_steps = max_steps
        self.truth = truth
        self.lines, self.notes, self.failures = [], [], []

    def fail(self, message):
        self.failures.append(message)

    def judge_row(self, row, device_home, x86_home, runs, x86_reference, cpuinfo):
        """Judge one row: `runs` is [(Run, device record, x86 record)]."""
        for cpu, identity in cpuinfo.items():
            expected = platforms.CPUS[cpu][0]
            named = (identity["hardware"] or "").endswith(f",{cpu}")
            if identity["part"] != expected and not named:
                self.fail(f"{row.name}: QEMU_CPU={cpu} but /proc/cpuinfo says {identity} (expected CPU part {expected})")
        for run, ours, theirs in runs:
            what = f"{row.name} {run.cpu} {run.key}"
            broken = [f"{side} exit {record['status']}: {record.get('error')}"
                      for side, record in (("device", ours), ("x86", theirs)) if record is not None and record["status"] != 0]
            if broken:
                self.fail(f"{what}: {'; '.join(broken)}")
                continue
            if run.kind in ("eval", "reference"):
                self.judge_eval(row, run, what, ours, theirs, device_home, x86_home, x86_reference)
            elif run.kind == "predict":
                self.judge_predict(row, run, what, ours, theirs)
            elif run.kind == "serve":
                self.judge_serve(row, run, what, ours, theirs)
            elif run.kind == "install":
                self.judge_install(row, run, what, ours)
            elif run.kind == "bench":
                self.notes.append(f"{row.name} {run.cpu} bench: cold start to first prediction, peak RSS "
                                  f"{ours['json']['peak_rss_mib']:.1f} MiB emulated, {theirs['json']['peak_rss_mib']:.1f}"
                                  " MiB on x86 (timings under emulation mean nothing)")

    def judge_eval(self, row, run, what, ours, theirs, device_home, x86_home, x86_reference):
        twins = {(result["model"], result["backend"]): result for result in theirs["json"]["results"]}
        tflite_backends = {result["backend"] for result in ours["json"]["results"] if result["model"].endswith(".tflite")}
        if row.xnnpack and run.kind == "eval" and tflite_backends & set(XNNPACK_BACKENDS) and not ours["xnnpack"]:
            self.fail(f"{what}: no XNNPACK delegate on the device (is /sys mounted?)")
        rss = ours["json"].get("peak_rss_mib")
        if row.rss_limit_mib is not None and (rss is None or rss >= row.rss_limit_mib):
            self.fail(f"{what}: peak RSS {rss} MiB emulated, limit {row.rss_limit_mib:g} MiB")
        for result in ours["json"]["results"]:
            model, backend = result["model"], result["backend"]
            name = f"{model} with {backend} ({result['images']} images)"
            twin = twins.get((model, backend))
            if twin is None:
                self.fail(f"{what}: {name} has no x86 twin (x86 ran {sorted(twins)})")
                continue
            mine = tasks.load_outputs(device_home, ours, model, backend)
            reference = tasks.load_outputs(x86_home, theirs, model, backend)
            identical, values, images, steps = compare_outputs(mine, reference)
            labels_equal = identical or (values is not None and bool(np.array_equal(mine.argmax(1), reference.argmax(1))))
            line = {
                "row": row.name, "cpu": run.cpu, "venv": run.venv, "kind": run.kind, "backend": backend,
                "model": model, "images": result["images"], "accuracy": result["accuracy"],
                "x86_accuracy": twin["accuracy"], "top1_identical": labels_equal, "outputs_identical": identical,
                "values_differing": values, "images_differing": images, "max_difference": steps,
                "dtype": None if mine is None else str(mine.dtype), "xnnpack": ours["xnnpack"],
                "rss_mib": rss, "x86_rss_mib": theirs["json"].get("peak_rss_mib"), "seconds": ours["seconds"],
                "identical_to_x86_reference": None,
            }
            if result["accuracy"] != twin["accuracy"]:
                self.fail(f"{what}: {name}: accuracy {100 * result['accuracy']:.2f}% != x86 {100 * twin['accuracy']:.2f}%")
            if not labels_equal:
                self.fail(f"{what}: {name}: top-1 labels differ from x86")
            int8 = mine is not None and mine.dtype == np.int8
            limit = self.max_steps if int8 and run.kind == "eval" and backend in XNNPACK_BACKENDS else 0.0
            if steps > limit:
                self.fail(f"{what}: {name}: raw outputs differ from x86 by up to {steps:g} "
                          f"{'quantization steps' if int8 else ''} (allowed {limit:g})"
                          + (": the emulator miscomputes (qemu >= 10 needed)" if run.kind == "reference" else ""))
            if backend == "numpy":
                expected = tasks.load_outputs(x86_home, x86_reference, "model_int8.tflite", "litert")
                same = mine is not None and expected is not None and compare_outputs(mine, expected[:len(mine)])[0]
                line["identical_to_x86_reference"] = same
                if not same:
                    self.fail(f"{what}: {name}: the numpy engine's outputs differ from x86 LiteRT's reference kernels")
            self.lines.append(line)

    def judge_predict(self, row, run, what, ours, theirs):
        mine = {p["name"].rsplit("/", 1)[-1]: p["label"] for p in ours["json"]["predictions"]}
        reference = {p["name"].rsplit("/", 1)[-1]: p["label"] for p in theirs["json"]["predictions"]}
        right = sum(mine.get(name) == label for name, label in self.truth.items())
        self.notes.append(f"{row.name} {run.cpu} predict ({ours['json']['backend']}): {len(mine)} PNG digits -> "
                          f"{' '.join(str(mine[n]) for n in sorted(mine))} ({right}/{len(self.truth)} right; "
                          f"x86: {'same labels' if mine == reference else 'DIFFERENT'})")
        if mine != reference:
            self.fail(f"{what}: predict gave {mine}, x86 gave {reference}")

    def judge_serve(self, row, run, what, ours, theirs):
        mine, reference = ours["json"], theirs["json"]
        check, reference_check = mine["info"]["self_check"] or {}, reference["info"]["self_check"] or {}
        figures = ("images", "accuracy", "float_accuracy", "agreement_with_float")
        right = sum(mine["labels"].get(name) == label for name, label in self.truth.items())
        self.notes.append(
            f"{row.name} {run.cpu} serve ({mine['info']['backend']}): ready in {mine['ready_seconds']:.0f} s emulated "
            f"(self-check on {check.get('images')} images: {100 * (check.get('accuracy') or 0):.2f}%, drop "
            f"{'-' if check.get('drop_points') is None else format(check['drop_points'], '.2f')} pt against the "
            f"float figure {check.get('float_accuracy_source')}), {len(mine['labels'])} PNG digits over HTTP -> {right}/{len(self.truth)} "
            f"right; x86 serve: {'same answers' if mine['labels'] == reference['labels'] else 'DIFFERENT'}")
        problems = []
        if mine["readyz"] != 200 or not check.get("passed"):
            problems.append(f"/readyz answered {mine['readyz']}, self-check {check}")
        if any(check.get(name) != reference_check.get(name) for name in figures):
            problems.append(f"self-check {[check.get(n) for n in figures]} != x86 {[reference_check.get(n) for n in figures]}")
        if mine["info"]["sha256"] != reference["info"]["sha256"] or mine["info"]["backend"] != reference["info"]["backend"]:
            problems.append(f"/api/info model {mine['info']['sha256']} on {mine['info']['backend']}, x86 "
                            f"{reference['info']['sha256']} on {reference['info']['backend']}")
        if set(mine["statuses"].values()) != {200} or mine["labels"] != reference["labels"]:
            problems.append(f"/api/predict answered {mine['statuses']} with {mine['labels']}, x86 {reference['labels']}")
        if mine["metrics_predictions"] != len(mine["labels"]):
            problems.append(f"/metrics counted {mine['metrics_predictions']} predictions for {len(mine['labels'])} answered")
        if mine["exit"] != 0:
            problems.append(f"exit status {mine['exit']} after SIGTERM")
        for problem in problems:
            self.fail(f"{what}: {problem}")


    def judge_install(self, row, run, what, ours):
        answers, plan = ours["json"], run.plan
        outcomes = answers["outcomes"]
        good = outcomes["good"]["identity"]
        expected = {
            "good": (0, f"installed {good}: ready for {plan.probation_seconds:g} s; "
                        + (f"int8-float agreement 100.00% over the last {plan.window} shadowed requests"
                           if plan.shadowing else "no shadow agreement on this device (no float reference it can "
                                                   "run): readiness checked only")),
            "gate-fails": (3, f"refused at the gate, {good} stays current: FAILED: "),
            "falls-live": (4, f"rolled back to {good}: "
                              + ("int8-float agreement " if plan.shadowing else "http://127.0.0.1:")),
        }
        also = {"falls-live": (f"over the last {plan.window} shadowed requests is below serve's threshold"
                               if plan.shadowing else "/readyz answers 503: ")}
        for name, (status, start) in expected.items():
            outcome = outcomes[name]
            lines = [line.removeprefix("mnist-edge install: ") for line in outcome["lines"]]
            quoted = [line for line in lines if line.startswith(start) and also.get(name, "") in line]
            self.notes.append(f"{row.name} {run.cpu} install {name}: exit {outcome['status']} in {outcome['seconds']:.0f} s "
                              f"({outcome['fed']} images posted): {quoted[0] if quoted else (lines or ['no line'])[-1]}")
            if outcome["status"] != status:
                self.fail(f"{what}: {name}: exit {outcome['status']}, expected {status}: "
                          f"{(lines or [outcome['last_stderr']])[-1]}")
            elif not quoted:
                self.fail(f"{what}: {name}: no line starting {start!r}{' with ' + repr(also[name]) if name in also else ''}"
                          f" in {lines}")
            if outcome["current"] != f"versions/{good}":
                self.fail(f"{what}: {name}: current is {outcome['current']}, expected versions/{good}")
        status = answers["status"] or {}
        if status.get("current") != good or (status.get("last") or {}).get("outcome") != "rolled-back":
            self.fail(f"{what}: status after the three: current {status.get('current')}, last "
                      f"{(status.get('last') or {}).get('outcome')}")
        if not answers["serving_good_again"]:
            self.fail(f"{what}: after the rollback the service did not answer ready with {good}'s model")
        killed = outcomes.get("killed-unpacking")
        if killed is None:
            self.fail(f"{what}: no install killed while unpacking")
        else:
            lines = [line.removeprefix("mnist-edge install: ") for line in killed["lines"]]
            self.notes.append(f"{row.name} {run.cpu} install killed-unpacking: exit {killed['status']} in "
                              f"{killed['seconds']:.0f} s, current {killed['current']}; last line: {(lines or ['none'])[-1]}")
            # SIGKILL: the shell reports 128 + 9, or the process itself -9 when the shell exec'd it.
            if killed["status"] not in (-9, 137):
                self.fail(f"{what}: killed-unpacking: exit {killed['status']}, expected a SIGKILL (137)")
            if killed["current"] != f"versions/{good}":
                self.fail(f"{what}: killed-unpacking: current is {killed['current']}, expected versions/{good}")
            if any(line.startswith(("installed ", "rolled back ")) for line in lines):
                self.fail(f"{what}: killed-unpacking: it got further than unpacking: {lines}")
        if plan.shadowing and outcomes["good"]["fed"] < plan.window:
            self.fail(f"{what}: good: {outcomes['good']['fed']} images answered, the window needs {plan.window}")


def outputs_text(line):
    if line["outputs_identical"]:
        text = "bit-identical"
    elif line["values_differing"] is None:
        text = "missing or wrong shape"
    else:
        text = f"{line['values_differing']} values in {line['images_differing']} images differ by <= {line['max_difference']:g}"
    if line["identical_to_x86_reference"] is not None:
        text += "; = x86 LiteRT reference kernels" if line["identical_to_x86_reference"] else "; != x86 LiteRT reference"
    return text


def print_table(lines, max_steps):
    header = ("row", "CPU", "venv", "backend", "model", "images", "accuracy", "= x86", "top-1 = x86",
              "raw outputs vs x86", "peak RSS emulated / x86", "time")
    table = [header]
    for line in lines:
        kernels = " (reference kernels)" if line["kind"] == "reference" else ""
        rss = "-" if line["rss_mib"] is None else f"{line['rss_mib']:.0f} / {line['x86_rss_mib']:.0f} MiB"
        table.append((
            line["row"], line["cpu"], line["venv"], line["backend"] + kernels, line["model"], f"{line['images']:,}",
            f"{100 * line['accuracy']:.2f}%", "yes" if line["accuracy"] == line["x86_accuracy"] else "NO",
            "yes" if line["top1_identical"] else "NO", outputs_text(line), rss, f"{line['seconds']:.0f} s",
        ))
    widths = [max(len(cells[column]) for cells in table) for column in range(len(header))]
    print()
    for cells in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    print(f"(x86 twin: the same command with the same interpreter version; int8 outputs through XNNPACK may "
          f"differ by {max_steps:g} step, where its arm64 and x86 kernels round differently; RSS: the eval "
          "process's VmHWM, under emulation qemu's own share included)")
