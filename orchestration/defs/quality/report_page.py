"""The quality report's page (index.html), rendered from the summary alone: one self-contained
HTML file with its CSS inline and its charts as inline SVG, no script and nothing loaded from
anywhere, so it reads the same offline, from disk, or served at the API's /quality/.

Its links (the Data Docs, summary.json) are relative to the page, for the same reason.
"""

from html import escape

CSS = """
:root { --ok: #1a7f37; --warn: #9a6700; --error: #cf222e; --muted: #59636e; --line: #d1d9e0;
        font-family: system-ui, sans-serif; }
body { max-width: 980px; margin: 0 auto; padding: 0 1rem 2rem; color: #1f2328; line-height: 1.45; }
header { display: flex; align-items: baseline; gap: .8rem; flex-wrap: wrap; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.4rem; margin: .8rem 0; } h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
.muted { color: var(--muted); font-size: .9rem; }
.badge { padding: .1rem .6rem; border-radius: 1rem; color: #fff; font-weight: 600; font-size: .85rem; }
.ok { background: var(--ok); } .warn { background: var(--warn); } .error { background: var(--error); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: .6rem; margin-top: 1rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .8rem; }
.card b { display: block; font-size: 1.5rem; } .card.bad b { color: var(--error); }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
.nowrap { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-size: .8rem; } pre { white-space: pre-wrap; word-break: break-all; margin: .2rem 0; }
svg { width: 100%; height: auto; } svg text { font-size: 11px; fill: var(--muted); }
.legend span { margin-right: 1rem; } .sw { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; }
.strip { display: grid; grid-template-columns: repeat(24, 1fr); gap: 2px; }
.strip div { text-align: center; font-size: .7rem; padding: .3rem 0; color: #fff; border-radius: 3px; }
.strip .open { background: #afb8c1; }
footer { margin-top: 2rem; border-top: 1px solid var(--line); padding-top: .6rem; }
"""
# Bar colours, written into the SVG (not CSS variables, which SVG attributes do not all take).
BLUE, AMBER, RED, PURPLE = "#0969da", "#bf8700", "#cf222e", "#8250df"
STATUS_TEXT = {"ok": "all good", "warn": "warnings", "error": "needs attention"}


def render(summary: dict) -> str:
    day = escape(summary["day"])
    body = [
        _header(summary),
        _cards(summary),
        _charts(summary["hours"]),
        _suites(summary["suites"]),
        _reconciliation(summary["reconciliation"]),
        _legacy(summary.get("legacy")),
        _checks(summary["checks"]),
        _problems(summary["problems"]),
        _footer(summary),
    ]
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Tally data quality, {day}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )


def _header(s: dict) -> str:
    status = s["status"]
    return (
        f"<header><h1>Data quality, {escape(s['day'])} (UTC)</h1>"
        f'<span class="badge {status}" id="status">{escape(STATUS_TEXT[status])}</span>'
        f'<span class="muted">built {escape(s["built_at"][:16].replace("T", " "))} UTC by Dagster\'s'
        " quality/quality_report asset</span></header>"
    )


def _cards(s: dict) -> str:
    t = s["totals"]
    recon = s["reconciliation"]
    cards = [
        ("Events counted", t.get("events"), False),
        ("Late events", t.get("late"), False),
        ("Late, not folded yet", t.get("late_pending"), bool(t.get("late_pending"))),
        ("Copies found late", t.get("duplicates"), False),
        ("Cells not reconciled", recon and recon["mismatched_cells"], bool(recon and recon["mismatched_cells"])),
        ("Expectations broken", sum(len(x["failed"]) for x in s["suites"]), any(x["failed"] for x in s["suites"])),
    ]
    items = "".join(
        f'<div class="card{" bad" if bad else ""}"><b>{_n(v)}</b>{escape(label)}</div>' for label, v, bad in cards
    )
    return f'<section class="cards" aria-label="totals">{items}</section>'


def _charts(hours: list[dict] | None) -> str:
    if not hours:
        return ""
    labels = [h["hour"][11:13] for h in hours]
    events = bars(labels, [("events", [h["events"] for h in hours], BLUE)], "Events counted per hour")
    parts = [
        ("added by the correction", [h["late_added"] for h in hours], AMBER),
        ("pending", [h["late_pending"] for h in hours], RED),
        ("copies (not added)", [h["duplicates"] for h in hours], PURPLE),
    ]
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{escape(n)}</span>' for n, _, c in parts)
    late = (
        f'<p class="legend muted">{legend}</p>{bars(labels, parts, "Late events per hour")}'
        if any(h["late"] for h in hours)
        else "<p>No late events this day: every event reached its minute before it closed.</p>"
    )
    return f"<section><h2>Events per hour</h2>{events}</section><section><h2>Late events per hour</h2>{late}</section>"


def bars(labels: list[str], series: list[tuple[str, list[int], str]], title: str) -> str:
    """A stacked bar chart as inline SVG: one bar per label, each series a colour, a tooltip per bar."""
    width, height, left, bottom, top = 720, 160, 64, 22, 10
    n = max(len(labels), 1)
    step = (width - left - 6) / n
    totals = [sum(values[i] for _, values, _ in series) for i in range(len(labels))]
    peak = max(totals, default=0)
    scale = (height - bottom - top) / (peak or 1)
    base = height - bottom
    out = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{top}" x2="{width}" y2="{top}" stroke="#d1d9e0" stroke-dasharray="3 3"/>',
        f'<line x1="{left}" y1="{base}" x2="{width}" y2="{base}" stroke="#afb8c1"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_short(peak)}</text>',
        f'<text x="{left - 6}" y="{base + 4}" text-anchor="end">0</text>',
    ]
    for i, label in enumerate(labels):
        x, y = left + i * step + 1, base
        tip = f"{label}:00 " + ", ".join(f"{name} {_n(values[i])}" for name, values, _ in series)
        out.append(f"<g><title>{escape(tip)}</title>")
        for _, values, colour in series:
            h = values[i] * scale
            if h > 0:
                y -= h
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step - 2:.1f}" height="{h:.1f}" fill="{colour}"/>')
        out.append("</g>")
        if i % 3 == 0:
            out.append(
                f'<text x="{x + (step - 2) / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(label)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def _suites(suites: list[dict]) -> str:
    if not suites:
        return ""
    rows, broken = [], []
    for s in suites:
        stats = s["statistics"]
        result = "held" if s["success"] else f"{len(s['failed'])} broken ({s['severity']})"
        link = f' <a href="{escape(s["data_docs"])}">details</a>' if s.get("data_docs") else ""
        held = f"{stats.get('successful_expectations', '?')} of {stats.get('evaluated_expectations', '?')}"
        rows.append(
            f"<tr><td><code>{escape(s['suite'])}</code></td><td>{escape(result)}</td><td>{held}{link}</td></tr>"
        )
        for e in s["failed"]:
            examples = "".join(f"<pre>{escape(_json(x))}</pre>" for x in e["examples"][:2])
            broken.append(
                f"<tr><td><code>{escape(s['suite'])}</code></td><td>{escape(e['description'])}</td>"
                f"<td>{escape(e['severity'])}</td><td class=n>{_n(e['unexpected_count'])}</td><td>{examples}</td></tr>"
            )
    table = "<table><tr><th>suite</th><th>result</th><th>expectations held</th></tr>" + "".join(rows) + "</table>"
    if broken:
        table += (
            '<h3>Broken expectations</h3><table id="broken"><tr><th>suite</th><th>expectation</th><th>severity</th>'
            "<th class=n>unexpected</th><th>examples</th></tr>" + "".join(broken) + "</table>"
        )
    return f"<section><h2>Expectations over the day</h2>{table}</section>"


def _reconciliation(recon: dict | None) -> str:
    if recon is None:
        return ""
    cells = []
    for h in recon["hours"]:
        label = h["hour"][11:13]
        if not h["closed"]:
            cells.append(f'<div class="open" title="{label}:00 not closed yet">{label}</div>')
        else:
            bad = h["mismatched_cells"]
            tip = f"{label}:00 " + (
                f"{bad} cells disagree, net {h['difference']:+d}" if bad else "every raw event counted once"
            )
            cells.append(f'<div class="{"error" if bad else "ok"}" title="{escape(tip)}">{label}</div>')
    text = (
        f"{recon['hours_checked']} closed hours checked: every event stored in Cassandra against the rollups plus the"
        " late events not folded yet, per event type and source."
    )
    table = ""
    if recon["mismatches"]:
        rows = "".join(
            f"<tr><td>{escape(m['hour'][11:16])}</td><td><code>{escape(m['event_type'])}</code></td>"
            f"<td>{escape(m['source'])}</td><td class=n>{_n(m['raw'])}</td><td class=n>{_n(m['counted'])}</td>"
            f"<td class=n>{_n(m['late_pending'])}</td><td class=n>{m['difference']:+d}</td></tr>"
            for m in recon["mismatches"]
        )
        table = (
            '<table id="mismatches"><tr><th>hour</th><th>event type</th><th>source</th><th class=n>raw</th>'
            "<th class=n>counted</th><th class=n>late pending</th><th class=n>difference</th></tr>" + rows + "</table>"
            '<p class="muted">Positive: stored but not counted; negative: counted more often than stored.</p>'
        )
    strip = f'<div class="strip">{"".join(cells)}</div>'
    return f"<section><h2>Reconciliation</h2><p>{escape(text)}</p>{strip}{table}</section>"


def _legacy(legacy: dict | None) -> str:
    if legacy is None:
        return ""
    if not legacy["hours_compared"]:
        return (
            "<section><h2>Legacy vs Tally</h2><p class=muted>No comparison with a legacy system recorded for this"
            " day (none is configured, or migration/legacy_comparison has not run).</p></section>"
        )
    text = (
        f"{legacy['hours_compared']} hours compared, {legacy['rows']} (hour, event type) rows: legacy"
        f" {legacy['legacy_count']:,} events, Tally {legacy['tally_count']:,};"
        f" {legacy['differing_rows']} rows differ beyond {legacy['tolerance']:.3%}. Slowest query:"
        f" legacy {legacy['legacy_query_s_max'] * 1000:,.0f} ms, Tally {legacy['tally_query_s_max'] * 1000:,.0f} ms."
    )
    rows = "".join(
        f"<tr><td>{escape(d['hour'][11:16])}</td><td><code>{escape(d['event_type'])}</code></td>"
        f"<td class=n>{_n(d['legacy_count'])}</td><td class=n>{_n(d['tally_count'])}</td>"
        f"<td class=n>{d['legacy_sum']:,.6g}</td><td class=n>{d['tally_sum']:,.6g}</td>"
        f"<td class=n>{d['difference']:.3%}</td></tr>"
        for d in legacy["differing"]
    )
    table = (
        '<table id="legacy"><tr><th>hour</th><th>event type</th><th class=n>legacy count</th><th class=n>Tally count'
        "</th><th class=n>legacy sum</th><th class=n>Tally sum</th><th class=n>difference</th></tr>" + rows + "</table>"
        if rows
        else ""
    )
    return f"<section><h2>Legacy vs Tally</h2><p>{escape(text)}</p>{table}</section>"


def _checks(checks: list[dict]) -> str:
    if not checks:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(c['asset'])}</code></td><td>{escape(c['check'])}</td>"
        f"<td class=nowrap>{escape(c['status'] + (' (' + c['severity'] + ')' if c['status'] == 'failed' else ''))}</td>"
        f"<td class=nowrap>{escape((c.get('at') or '')[:16].replace('T', ' '))}</td>"
        f"<td>{escape(c.get('description') or '')}</td></tr>"
        for c in checks
    )
    return (
        "<section><h2>Latest checks on the stream's tables</h2><p class=muted>As Dagster recorded them when the report"
        ' was built (freshness every 30 s, expectations hourly).</p><table id="checks"><tr><th>asset</th>'
        f"<th>check</th><th>status</th><th>at (UTC)</th><th>says</th></tr>{rows}</table></section>"
    )


def _problems(problems: list[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    return f'<section><h2>Not checked</h2><ul id="problems">{items}</ul></section>'


def _footer(s: dict) -> str:
    docs = s.get("data_docs") or {}
    link = (
        f'<a href="{escape(docs["index"])}">Great Expectations Data Docs</a> (every validation, with all its rows), '
        if docs.get("index")
        else ""
    )
    return f'<footer class="muted">{link}<a href="summary.json">summary.json</a> (this page as data).</footer>'


def _short(n: int) -> str:
    """An axis label that fits: 1,087,910 -> 1.09M."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e5, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:,}"


def _n(value) -> str:
    return "-" if value is None else f"{value:,}"


def _json(value) -> str:
    import json

    return json.dumps(value, default=str, ensure_ascii=False)
