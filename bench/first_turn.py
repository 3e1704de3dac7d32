"""The first turn after `anima run` starts vs the steady state (issue #13).

`python bench/first_turn.py [RUNS] [--provider anthropic|openai]`

Starts the real runtime against the fake model server (through the Anthropic SDK, or the OpenAI
SDK on an OpenAI-compatible endpoint), measures start → ready
and start → warm (the runtime logs `warm` once the configured providers are loaded, in the
background), then the first message's landing → its request at the model server, then the same
for steady-state messages. Target: first ≤ 1.5x steady.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import make_home, start_runtime, summary

from anima import mailbox
from anima.message import Message
from anima.testing import FakeModelServer, Reply


def landing_to_request(fake: FakeModelServer, home, name: str, text: str) -> float:  # type: ignore[no-untyped-def]
    before = len(fake.requests)
    t0 = time.time()
    mailbox.deliver(home.agents_dir / name, Message.create(sender="you", to=name, body=text))
    reqs = fake.wait_for_requests(before + 1, timeout=30)
    return (reqs[before].at - t0) * 1000


def run_once_measured(n_steady: int, provider: str) -> dict[str, float]:
    with FakeModelServer(default=Reply("ok")) as fake:
        home = make_home(1, fake.url, provider=provider)
        if provider == "openai":  # the built-in endpoint pointed at the fake, keyless
            with open(home.config_path, "a") as fh:
                fh.write(f'[providers.openai]\nbase_url = "{fake.url}/v1"\napi_key_env = ""\n')
        seen: dict[str, float] = {}
        proc = start_runtime(home, until=("anima run: watching", "anima run: warm"), marks=seen)
        marks = {"ready": seen["anima run: watching"], "warm": seen["anima run: warm"]}
        try:
            marks["first"] = landing_to_request(fake, home, "a000", "first")
            steady = []
            for i in range(n_steady):
                time.sleep(0.1)
                steady.append(landing_to_request(fake, home, "a000", f"steady {i}"))
            marks["steady"] = statistics.median(steady)
        finally:
            proc.terminate()
            proc.wait()
        return marks


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="?", type=int, default=5)
    parser.add_argument("--provider", choices=("anthropic", "openai"), default="anthropic")
    args = parser.parse_args()
    runs = [run_once_measured(15, args.provider) for _ in range(args.runs)]
    print(f"provider: {args.provider}")
    for key in ("ready", "warm", "first", "steady"):
        print(summary(f"{key:>6}", [r[key] for r in runs]))
    ratios = [r["first"] / r["steady"] for r in runs]
    print(f"first / steady: median {statistics.median(ratios):.2f}x (target ≤ 1.5x)")
