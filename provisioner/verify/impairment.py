"""The `impairment` cell (issue 18): what a guest measures across an impaired NIC, and the
tolerances that decide whether the measurement matches the declaration. Every tolerance rule
of vnet is in this file (the README, "Impairment", repeats them).

The guest (playbooks/library/vnet_probe.py, `measure`) does, bound to the NIC's device and
address, against vnet's host-side listener on that network, in its one probe invocation:
- RTT and loss: `samples` UDP nonce datagrams, one every INTERVAL; each answer must carry this
  datagram's fresh nonce and the name "host". RTT = median and IQR of the answered ones; loss =
  unanswered / sent, counted after a drain wait.
- throughput (when rate_mbit is declared), the way the backend applies the rate
  (RATE_DIRECTION): toward the guest, the listener streams for STREAM_SECONDS over TCP after
  echoing the nonce and the guest counts what it receives after WARMUP seconds; from the
  guest, the guest sends and the listener counts and answers with the count.

Baseline: an unshaped TCG path under load has a median RTT of tens of ms, an IQR of several and
an occasional lost datagram of its own, so a small declared value measured alone passes with
nothing applied. In the same probe call, at the same time (a second thread), the guest sends the
same datagrams to the same listener over its management NIC (ends.mgmt_host_ip; the route picks
that NIC), a path of the same guest, host and load without the impairment. What is judged is
the EXCESS over that baseline (guest: vnet_probe.judge_excess).

Tolerances (the bounds are computed here and sent in the probe spec; the guest compares):
- delay: the median RTT is at least delay - max(1 ms, jitter/2) (netem never sends early), and
  its excess over the baseline median is at least that minus the baseline IQR (the two paths'
  latencies wander by about that much) and at most delay + jitter/2 + max(RTT_SLACK_MS, 50 % of
  delay) (the TCG guests and the loaded host add their own latency, and only on top).
- jitter: netem's jitter is uniform in +/- jitter, so its IQR is about jitter; independent
  spreads add in quadrature, so the excess is sqrt(IQR^2 - baseline IQR^2): at least jitter/2,
  at most jitter + RTT_SLACK_MS.
- loss: the sample count makes "no loss at all" improbable for the declared rate (P(0 lost) <=
  ALPHA/2, a binomial bound); lost minus the baseline's lost is at least the ALPHA/2 quantile of
  Binomial(n, loss), and lost is at most the 1 - ALPHA/2 quantile of Binomial(n, loss +
  BASE_LOSS).
- rate: the received throughput lies within RATE_LOW..RATE_HIGH of the declared rate (absolute:
  a transfer's rate has no baseline to subtract), and the same transfer over the unshaped
  management path, right after, reaches RATE_CONTROL x the declared rate: otherwise the limit
  cannot be told from what the guest carries anyway (a TCG guest's own capacity is tens of
  Mbit/s), and the cell says so.
Too small to tell (NOISE): a declared part whose lower bound is not above NOISE[part] x the
baseline's own noise (the IQR for delay and jitter, the lost count for loss), nor, for loss,
above what the path may lose on its own (natural_loss: BASE_LOSS, whatever the baseline lost),
cannot be told from a path with nothing applied; the cell is `error` and says so, never `pass`.
With MAX_SAMPLES that leaves a declared loss of about 4 % or more provable (4 %: 950 samples,
5 %: 620, 10 %: 190).
A part that is not declared is measured and shown, never judged; nothing declared is `error`.
"""
from __future__ import annotations

import math

from ..lab.model import Backend, Impairment, Lab
from . import servedon

INTERVAL = 0.004          # s between UDP samples: 250 per second, far below any shaping
MIN_SAMPLES = 60          # RTT: enough for a median and quartiles
MAX_SAMPLES = 1000        # a few seconds at INTERVAL; lab/impair.py keeps loss_pct >= 1
ALPHA = 0.002             # chance to call a correct loss wrong (two-sided), and no loss right
BASE_LOSS = 0.01          # what the loaded host and TCG guests may lose on their own
RTT_SLACK_MS = 60.0       # latency the TCG guests and the loaded host add on top (a median
                          # of 36 ms with no delay at all was seen here under load)
STREAM_SECONDS = 2.5      # throughput: a short timed transfer toward the guest
WARMUP = 0.5              # s of it not counted: TCP's slow start and the shaper's burst
RATE_LOW, RATE_HIGH = 0.6, 1.15
# The same transfer over the unshaped management path must reach this x the declared rate:
# under RATE_HIGH x, an unshaped lab path would pass for a shaped one (a TCG guest's own
# capacity near the declared rate), and the margin above it covers a transfer's own spread
RATE_CONTROL = 1.5
# part -> how many units of the baseline's noise its lower bound must exceed: delay 2 IQRs (its
# excess may sit one IQR below the bound and an unapplied delay one IQR above zero), jitter 1
# (a jitter of twice the baseline IQR), loss 1 (more lost than the baseline lost)
NOISE = {"rtt_median_ms": 2.0, "rtt_iqr_ms": 1.0, "lost": 1.0}


# Which way a declared rate is measured: the way the backend applies it. libvirt: tbf (or
# netem) on the tap's egress, toward the guest (drivers/libvirt/impair.py); VirtualBox: its
# bandwidth groups limit only what the VM sends (manual 6.10).
RATE_DIRECTION = {Backend.LIBVIRT: "to_guest", Backend.VIRTUALBOX: "from_guest"}


def samples_for(impair: Impairment) -> int:
    """How many UDP samples: MIN_SAMPLES for the RTT, more when a loss p is declared: enough
    that (1 - p)^n <= ALPHA/2 (no loss at all is then no plausible outcome), and then, up to
    MAX_SAMPLES, enough that the declared loss's lower bound clears what the path may lose on
    its own (natural_loss). Where MAX_SAMPLES is not enough, the cell says it cannot tell."""
    if not impair.loss_pct:
        return MIN_SAMPLES
    p = impair.loss_pct / 100
    n = min(MAX_SAMPLES, max(MIN_SAMPLES, math.ceil(math.log(ALPHA / 2) / math.log(1 - p))))
    return next((m for m in range(n, MAX_SAMPLES, 10)
                 if binomial_quantile(m, p, ALPHA / 2) > natural_loss(m)), MAX_SAMPLES)


def natural_loss(n: int) -> int:
    """How many of n datagrams the path may lose on its own (BASE_LOSS, at 1 - ALPHA/2): a
    lossless baseline does not prove the impaired path loses none (one lost datagram there,
    none on the baseline, passed a declared 2 % with nothing applied)."""
    return binomial_quantile(n, BASE_LOSS, 1 - ALPHA / 2)


def binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Binomial(n, p)."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def bounds(impair: Impairment, samples: int) -> dict:
    """[low, high] per measured quantity that is judged (see the module docstring)."""
    out: dict[str, list[float]] = {}
    jitter = impair.jitter_ms or 0.0
    if impair.delay_ms:
        d = impair.delay_ms
        out["rtt_median_ms"] = [round(d - max(1.0, jitter / 2), 2),
                                round(d + jitter / 2 + max(RTT_SLACK_MS, 0.5 * d), 2)]
    if jitter:
        out["rtt_iqr_ms"] = [round(jitter / 2, 2), round(jitter + RTT_SLACK_MS, 2)]
    if impair.loss_pct:
        p = impair.loss_pct / 100
        out["lost"] = [binomial_quantile(samples, p, ALPHA / 2),
                       binomial_quantile(samples, min(1.0, p + BASE_LOSS), 1 - ALPHA / 2)]
    if impair.rate_mbit:
        out["mbit"] = [round(impair.rate_mbit * RATE_LOW, 3), round(impair.rate_mbit * RATE_HIGH, 3)]
    return out


def probe_for(impair: Impairment, backend: Backend = Backend.LIBVIRT,
              baseline_target: str | None = None) -> dict:
    """The `impair` part of the probe spec the guest runs; baseline_target: the host's address
    over the guest's unimpaired management path (the module docstring)."""
    n = samples_for(impair)
    worst = ((impair.delay_ms or 0) + (impair.jitter_ms or 0)) / 1000
    return {"declared": impair.as_dict(), "samples": n, "interval": INTERVAL,
            "drain": round(1.0 + 2 * worst, 3), "stream": STREAM_SECONDS if impair.rate_mbit else 0,
            "direction": RATE_DIRECTION[backend], "warmup": WARMUP, "bounds": bounds(impair, n),
            "noise": NOISE, "floor": {"lost": natural_loss(n)} if impair.loss_pct else {},
            "rate_control": round(impair.rate_mbit * RATE_CONTROL, 3) if impair.rate_mbit
            else None,
            "baseline": {"target": baseline_target} if baseline_target else None}


def impairment_cells(lab: Lab, ends, make, backend: Backend = Backend.LIBVIRT) -> list:
    """One `impairment` cell per impaired NIC, run by its guest against vnet's host-side
    listener on the NIC's network; make(kind, network, source, target, runner, probe)."""
    cells = []
    for vm in lab.vms:
        for nic in vm.nics:
            if nic.impair is None:
                continue
            net = lab.network(nic.network)
            host = str(net.host_ip)
            cells.append(make("impairment", nic.network, vm.name, f"host ({host}) over {nic.mac}",
                              f"guest:{vm.name}",
                              dict(target=host, port=ends.host_listener_port,
                                   expect_name=servedon.host_answer(lab, vm, net),
                                   bind_mac=nic.mac, timeout=3.0,
                                   impair=probe_for(nic.impair, backend, ends.mgmt_host_ip))))
    return cells


def annotate(cells: list, applied: dict) -> None:
    """Add where each impairment was applied (the lab record's `impair`, written by the
    driver) to its cell's detail: a measurement is read against what was done, and why."""
    for cell in cells:
        if cell.kind != "impairment":
            continue
        where = applied.get(cell.source, {}).get(cell.probe["bind_mac"])
        cell.detail += f"; applied: {where['summary']}" if where else \
            "; applied: vnet has no record of applying it"


# Linux's SYN retransmissions: the first RTO is 1 s and doubles (RFC 6298 5.5, tcp_syn_retries),
# so a connect has sent its k-th SYN at SYN_SENT_AT[k - 1] s; vnet_probe resends a UDP request
# every UDP_RESEND s (vnet_probe.UDP_RESEND).
SYN_SENT_AT = (0.0, 1.0, 3.0, 7.0, 15.0)
UDP_RESEND = 1.0
NEGATIVE_TIMEOUT_MAX = 16.0     # s: past this, a negative cell across the loss is not proven
ARP_SOLICITS = 3                # Linux's neigh mcast_solicit: then "host unreachable"


def unprovable_because(lost: float, attempts: int, delay: float, timeout: float) -> str:
    """Why no wait under NEGATIVE_TIMEOUT_MAX tells isolation from the impairment: the loss
    (more attempts than fit), the delay (an answer could come after the limit), or both."""
    limit = f"vnet's {NEGATIVE_TIMEOUT_MAX:g} s limit"
    if math.isinf(timeout):
        return (f"the path crosses NICs that lose {lost:.0%} of the attempts; {attempts} "
                f"attempts would be needed to tell isolation from loss, more than fit in {limit}")
    said = f"{attempts} attempts against its {lost:.0%} loss and " if attempts > 1 else ""
    return (f"telling isolation from impairment on this path needs {said}a wait of "
            f"{timeout:.1f} s for its {delay * 1000:g} ms of delay and jitter each way, over "
            f"{limit}")


def harden_negatives(lab: Lab, cells: list) -> None:
    """A negative cell whose path crosses impaired NICs ends on silence that the impairment
    alone can explain: a delay longer than its timeout, or every attempt lost. Its timeout grows
    by the path's delay and jitter and until the chance that loss took every attempt is at most
    ALPHA/2; where that would exceed NEGATIVE_TIMEOUT_MAX (a high declared loss), the cell is
    `error` ("not provable"), never a `fail` that loss could have made. Where the loss can take
    all ARP_SOLICITS of a neighbour lookup, "host unreachable" proves nothing either (the probe
    makes it `error`: vnet_probe._not_connected)."""
    by_mac = {n.mac: n for vm in lab.vms for n in vm.nics}
    by_ip = {str(n.ip.ip): n for vm in lab.vms for n in vm.nics if n.ip is not None}
    for cell in cells:
        probe = cell.probe
        if cell.expected != "fail" or cell.runner == "none" or "target" not in probe \
                or probe.get("arp_claim"):
            continue
        ends = [by_mac.get(probe.get("bind_mac", "")), by_ip.get(probe["target"])]
        impaired = [n.impair for n in ends if n is not None and n.impair is not None]
        if not impaired:
            continue
        delay = sum((i.delay_ms or 0) + (i.jitter_ms or 0) for i in impaired) / 1000
        lost = 1 - math.prod(1 - (i.loss_pct or 0) / 100 for i in impaired)
        attempts = 1 if lost == 0 else math.ceil(math.log(ALPHA / 2) / math.log(lost))
        sent_at = (attempts - 1) * UDP_RESEND if probe.get("proto") == "udp" else \
            (SYN_SENT_AT[attempts - 1] if attempts <= len(SYN_SENT_AT) else math.inf)
        timeout = max(float(probe.get("timeout", 3.0)), sent_at + 1.0 + 2 * delay)
        if timeout > NEGATIVE_TIMEOUT_MAX:
            cell.runner, cell.observed = "none", "error"
            cell.detail = f"not provable: {unprovable_because(lost, attempts, delay, timeout)}"
            continue
        probe.update(timeout=round(timeout, 2), rtt_timeout=False,
                     impaired_path={"delay_s": round(delay, 3), "loss": round(lost, 4),
                                    "attempts": attempts})
        if lost ** ARP_SOLICITS > ALPHA / 2:      # a neighbour that never heard is no proof
            probe["arp_unproven"] = True
