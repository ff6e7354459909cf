"""On a failed cluster test, what the Granary pods last logged: a failure in
CI leaves nothing else behind to read (the cluster goes down after it)."""
import json

import pytest

import kube

LOG_LINES = 40


def _granary_logs():
    out = []
    try:
        pods = json.loads(kube.kubectl("get", "pods", "-n", kube.NS, "-o", "json"))["items"]
    except Exception as e:  # the cluster itself may be what failed
        return [f"(cannot list the pods of {kube.NS}: {e})"]
    for pod in pods:
        name = pod["metadata"]["name"]
        for c in pod["spec"]["containers"]:
            r = kube.kubectl_result("logs", "-n", kube.NS, name, "-c", c["name"],
                                    f"--tail={LOG_LINES}", timeout=30)
            out.append(f"----- {name}/{c['name']} (last {LOG_LINES} lines) -----")
            out.append((r.stdout or r.stderr).rstrip())
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        report.sections.append(("granary pods' logs", "\n".join(_granary_logs())))
