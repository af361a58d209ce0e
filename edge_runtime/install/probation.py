"""Probation: watch the restarted service until it has proved the new version on live traffic.

For `seconds`, every `poll_seconds`:
- GET /readyz must answer 200 (serve's start-up self-check passed), from a process serving the new
  version's model (its sha256 on /api/info is one the new manifest lists). Until it first does, the
  service is starting; after that, `MISSES_ALLOWED` failed polls in a row fail probation, and so
  does a 503, which carries serve's reason.
- Once serve's agreement window is full (enough shadowed requests to judge), its int8-float
  agreement must not be below serve's own threshold: the `below` flag and figures come from
  /api/info's live snapshot, so the threshold lives in serve alone (--min-agreement).
Without a float reference on the device (the numpy engine, no shadowing), or when too few
requests came to fill the window, only readiness is checked; the verdict says so. With
`require_agreement` (install --require-agreement) that fails probation instead: a quiet device,
or one that cannot shadow, proves nothing about agreement.
"""

import dataclasses
import json
import time
import urllib.error
import urllib.request

MISSES_ALLOWED = 3


@dataclasses.dataclass(frozen=True)
class ProbationSettings:
    """How probation runs; `install`'s --service-url, --probation-seconds and --token-file map onto it."""

    service_url: str = "http://127.0.0.1:8080"
    seconds: float = 600.0
    token: str | None = None
    poll_seconds: float = 1.0
    require_agreement: bool = False  # fail unless the agreement window filled (and held)


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # one line: why it failed, or what was proved


def get_json(url, token=None, timeout=5.0):
    """(HTTP status, decoded JSON) of GET `url`; (None, the error's text) when nothing answered."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except ValueError:
            return error.code, None
    except (OSError, ValueError) as error:
        return None, str(getattr(error, "reason", None) or error)


def agreement_failure(live):
    """serve's live snapshot -> None, or the one line saying its full window fell below its threshold."""
    window = (live or {}).get("shadow", {}).get("window")
    if not window or window["filled"] < window["size"] or not window["below"]:
        return None
    return (f"int8-float agreement {100 * window['agreement']['value']:.2f}% over the last {window['filled']} "
            f"shadowed requests is below serve's threshold {100 * window['min_agreement']:.2f}%")


def agreement_judged(live):
    """True when serve's agreement window is full, so the agreement was judged."""
    window = (live or {}).get("shadow", {}).get("window")
    return bool(live and live.get("reference") is not None and window and window["filled"] >= window["size"])


def shadow_summary(live):
    window = (live or {}).get("shadow", {}).get("window")
    if not live or live.get("reference") is None or not window:
        return "no shadow agreement on this device (no float reference it can run): readiness checked only"
    if window["filled"] < window["size"]:
        return (f"agreement not judged: {window['filled']} of the {window['size']} shadowed requests serve needs "
                "to judge")
    return f"int8-float agreement {100 * window['agreement']['value']:.2f}% over the last {window['filled']} shadowed requests"


def watch(settings, model_sha256s, log, clock=time.monotonic, sleep=time.sleep):
    """Run probation against the service at settings.service_url; return a Verdict.

    `model_sha256s`: the sha256 of every model in the new version (the served one must be among them).
    `log` takes one line.
    """
    base = settings.service_url.rstrip("/")
    deadline = clock() + settings.seconds
    ready_seen, misses, last_problem, live = False, 0, "no answer yet", None
    while True:
        status, document = get_json(f"{base}/readyz", settings.token)
        problem = None
        if status == 200:
            info_status, info = get_json(f"{base}/api/info", settings.token)
            if info_status != 200 or not isinstance(info, dict):
                problem = f"{base}/api/info answered {info_status}: {info}"
            elif info.get("sha256") not in model_sha256s:
                problem = f"{base} serves a model with sha256 {str(info.get('sha256'))[:16]}…, not one of the new version's"
            else:
                if not ready_seen:
                    log(f"probation: {base}/readyz answers 200 with the new version's {info.get('model')} "
                        f"({info.get('backend')})")
                ready_seen, misses, live = True, 0, info.get("live")
                failure = agreement_failure(live)
                if failure:
                    return Verdict(False, failure)
        elif status == 503:
            reason = document.get("reason") if isinstance(document, dict) else document
            return Verdict(False, f"{base}/readyz answers 503: {reason}")
        else:
            problem = f"{base}/readyz: {document if status is None else f'status {status}'}"
        if problem is not None:
            last_problem = problem
            if ready_seen:
                misses += 1
                if misses >= MISSES_ALLOWED:
                    return Verdict(False, f"the service stopped answering: {problem}")
        if clock() >= deadline:
            break
        sleep(min(settings.poll_seconds, max(0.0, deadline - clock())))
    if not ready_seen:
        return Verdict(False, f"not ready with the new version within {settings.seconds:g} s: {last_problem}")
    if settings.require_agreement and not agreement_judged(live):
        return Verdict(False, f"--require-agreement: {shadow_summary(live)}")
    return Verdict(True, f"ready for {settings.seconds:g} s; {shadow_summary(live)}")
