"""`service inspect --pretty`."""
from __future__ import annotations

from api.units import format_duration
from cli.output import ago


def pretty_service(s: dict) -> str:
    spec = s["Spec"]
    tt = spec.get("TaskTemplate", {})
    cs = tt.get("ContainerSpec", {})
    lines = [f"ID:\t\t{s['ID']}", f"Name:\t\t{spec.get('Name', '')}"]
    if spec.get("Labels"):
        lines.append("Labels:")
        lines += [f" {k}={v}" for k, v in spec["Labels"].items()]
    mode = spec.get("Mode", {})
    if "Replicated" in mode:
        lines += ["Service Mode:\tReplicated", f" Replicas:\t{mode['Replicated'].get('Replicas', 0)}"]
    elif "ReplicatedJob" in mode:
        rj = mode["ReplicatedJob"]
        lines += ["Service Mode:\tReplicatedJob", f" Max Concurrent:\t{rj.get('MaxConcurrent', 1)}",
                  f" Total Completions:\t{rj.get('TotalCompletions', rj.get('MaxConcurrent', 1))}"]
    elif "GlobalJob" in mode:
        lines.append("Service Mode:\tGlobalJob")
    else:
        lines.append("Service Mode:\tGlobal")
    us = s.get("UpdateStatus")
    if us:
        lines += ["UpdateStatus:", f" State:\t\t{us.get('State', '')}"]
        if us.get("StartedAt"):
            lines.append(f" Started:\t{ago(us['StartedAt'])}")
        if us.get("State") in ("completed", "rollback_completed") and us.get("CompletedAt"):
            lines.append(f" Completed:\t{ago(us['CompletedAt'])}")
        lines.append(f" Message:\t{us.get('Message', '')}")
    pl = tt.get("Placement", {})
    if pl:
        lines.append("Placement:")
        if pl.get("Constraints"):
            lines.append(f" Constraints:\t{pl['Constraints']}")
        for p in pl.get("Preferences", []):
            lines.append(f" Preferences:\tspread={p.get('Spread', {}).get('SpreadDescriptor', '')}")
        if pl.get("MaxReplicas"):
            lines.append(f" Max Replicas Per Node:\t{pl['MaxReplicas']}")
    rp = tt.get("RestartPolicy")
    if rp:
        lines.append("RestartPolicy:")
        lines.append(f" Condition:\t{rp.get('Condition', 'any')}")
        if "Delay" in rp:
            lines.append(f" Delay:\t\t{format_duration(rp['Delay'])}")
        if rp.get("MaxAttempts"):
            lines.append(f" Max Attempts:\t{rp['MaxAttempts']}")
        if rp.get("Window"):
            lines.append(f" Window:\t{format_duration(rp['Window'])}")
    for key, title, verb in (("UpdateConfig", "UpdateConfig", "Update"), ("RollbackConfig", "RollbackConfig", "Rollback")):
        uc = spec.get(key)
        if uc is None:
            continue
        lines += [f"{title}:", f" Parallelism:\t{uc.get('Parallelism', 0)}"]
        if uc.get("Delay"):
            lines.append(f" Delay:\t\t{format_duration(uc['Delay'])}")
        lines.append(f" On failure:\t{uc.get('FailureAction', 'pause')}")
        lines.append(f" Monitoring Period: {format_duration(uc.get('Monitor', 5_000_000_000))}")
        lines.append(f" Max failure ratio: {uc.get('MaxFailureRatio', 0):g}")
        lines.append(f" {verb} order:{' ' * (6 if verb == 'Update' else 4)}{uc.get('Order', 'stop-first')}")
    lines += ["ContainerSpec:", f" Image:\t\t{cs.get('Image', '')}"]
    if cs.get("Command"):
        lines.append(f" Command:\t{' '.join(cs['Command'])}")
    if cs.get("Args"):
        lines.append(f" Args:\t\t{' '.join(cs['Args'])}")
    if cs.get("Env"):
        lines.append(" Env:\t\t" + " ".join(cs["Env"]))
    if cs.get("Init") is not None:
        lines.append(f" Init:\t\t{str(cs['Init']).lower()}")
    if cs.get("Groups"):
        lines.append(" Groups:\t" + " ".join(cs["Groups"]))
    lines += _surroundings(tt)
    res = tt.get("Resources", {})
    if res:
        lines.append("Resources:")
        for section, title in (("Reservations", "Reservations"), ("Limits", "Limits")):
            vals = res.get(section)
            if vals:
                lines.append(f" {title}:")
                if vals.get("NanoCPUs"):
                    lines.append(f"  CPU:\t\t{vals['NanoCPUs'] / 1e9:g}")
                if vals.get("MemoryBytes"):
                    lines.append(f"  Memory:\t{vals['MemoryBytes'] / 2**20:g}MiB")
                if vals.get("Pids"):
                    lines.append(f"  Pids:\t\t{vals['Pids']}")
    return "\n".join(lines)


def _surroundings(tt: dict) -> list[str]:
    """Sysctls, Log Driver and Isolation as Docker's --pretty shows them; hosts and DNS too."""
    cs = tt.get("ContainerSpec", {})
    lines = []
    for line in cs.get("Hosts") or []:
        lines.append(f" Host:\t\t{line}")
    dns = cs.get("DNSConfig") or {}
    for key, title in (("Nameservers", "DNS"), ("Search", "DNS Search"), ("Options", "DNS Options")):
        if dns.get(key):
            lines.append(f" {title}:{chr(9) * (2 if len(title) < 6 else 1)}{' '.join(dns[key])}")
    if cs.get("Sysctls"):
        lines.append("SysCtls:")
        lines += [f" {k}: {v}" if v else f" {k}" for k, v in sorted(cs["Sysctls"].items())]
    driver = tt.get("LogDriver")
    if driver:
        lines.append("Log Driver:")
        if driver.get("Name"):
            lines.append(f" Name:\t\t{driver['Name']}")
        if driver.get("Options"):
            lines.append(" LogOpts:")
            lines += [f"  {k}:\t\t{v}" if v else f"  {k}" for k, v in sorted(driver["Options"].items())]
    if cs.get("Isolation"):
        lines.append(f"Isolation: {cs['Isolation']}")
    return lines
