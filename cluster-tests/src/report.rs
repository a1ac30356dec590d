//! The self-contained HTML report: verdicts and counts, a timeline of
//! every client's operations with the fault periods shaded, latency over
//! time, and every violation with the operations involved. Inline SVG and
//! CSS only, so the file can be mailed or attached to an issue.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::history::{F, History, NEMESIS, OpType};
use crate::run::Summary;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 70.0;

fn color(f: F, kind: OpType) -> &'static str {
    match (kind, f) {
        (OpType::Ok, F::Acquire) => "#2e7d32",
        (OpType::Ok, F::Release) => "#81c784",
        (OpType::Ok, F::Read | F::Write) => "#1565c0",
        (OpType::Ok, _) => "#90a4ae",
        (OpType::Fail, _) => "#ef6c00",
        _ => "#c62828",
    }
}

/// The report for `history` and its `summary`.
pub fn html(history: &History, summary: &Summary) -> String {
    let end_ns = history.end_ns();
    let end = end_ns.max(1) as f64;
    let x = |t: u64| LEFT + (t as f64 / end) * (WIDTH - LEFT - 10.0);
    let pairs = history.pairs();
    let processes: BTreeSet<i64> = pairs
        .iter()
        .map(|p| p.invoke.process)
        .filter(|p| *p >= 0)
        .collect();
    let row_h = 14.0;
    let top = 20.0;
    let height = top + row_h * processes.len() as f64 + 20.0;
    let row_of = |p: i64| processes.iter().position(|q| *q == p).unwrap_or(0) as f64;
    let faults = history.fault_periods();
    let mut out = String::new();
    let verdict = format!("{:?}", summary.verdict).to_lowercase();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>raftlock jepsen seed {seed}: {verdict}</title>\
         <style>body{{font:14px sans-serif;margin:20px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         .pass{{color:#2e7d32}}.fail{{color:#c62828}}.unknown{{color:#ef6c00}}\
         pre{{background:#f5f5f5;padding:6px;overflow-x:auto;font-size:12px}}</style></head><body>\
         <h1>raftlock fault test: <span class=\"{verdict}\">{verdict}</span></h1>\
         <p>seed {seed} · target {target:?} · {nodes} nodes · {clients} clients · time limit {tl} s · \
         nemesis {nem} · {faults} faults · {ops} ops</p>",
        seed = summary.seed,
        target = summary.target,
        nodes = summary.nodes,
        clients = summary.clients,
        tl = summary.time_limit_s,
        nem = esc(&summary.nemesis.join(",")),
        faults = summary.faults_injected,
        ops = pairs.len(),
    );
    out.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>counts</th><th>note</th></tr>");
    for c in &summary.checkers {
        let v = format!("{:?}", c.verdict).to_lowercase();
        let counts: Vec<String> = c.counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{v}\">{v}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.checker),
            esc(&counts.join(", ")),
            esc(c.note.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");

    // Timeline.
    let _ = write!(
        out,
        "<h2>Timeline</h2><p>One row per client; a bar from invocation to completion: \
         <span style=\"color:#2e7d32\">acquire ok</span>, <span style=\"color:#81c784\">release ok</span>, \
         <span style=\"color:#1565c0\">register access</span>, <span style=\"color:#90a4ae\">lease ok</span>, \
         <span style=\"color:#ef6c00\">fail</span>, <span style=\"color:#c62828\">indeterminate</span>. \
         Shaded: faults (hover for details).</p>\
         <svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (start, stop, label) in &faults {
        let x0 = x(*start);
        let x1 = x(stop.unwrap_or(end_ns));
        let _ = write!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ffcdd2\" opacity=\"0.5\"><title>{}</title></rect>",
            (x1 - x0).max(1.0),
            height - top - 20.0,
            esc(label)
        );
    }
    for p in &processes {
        let _ = write!(
            out,
            "<text x=\"2\" y=\"{:.1}\" font-size=\"10\">client {p}</text>",
            top + row_h * row_of(*p) + 10.0
        );
    }
    for p in &pairs {
        if p.invoke.process < 0 {
            continue;
        }
        let kind = p.outcome();
        let t1 = p.complete.map_or(end_ns, |c| c.time_ns);
        let x0 = x(p.invoke.time_ns);
        let w = (x(t1) - x0).max(1.0);
        let y = top + row_h * row_of(p.invoke.process) + 2.0;
        // Short tooltips: a long run has ~10^5 of them.
        let result = p.result();
        let tip = format!(
            "#{} {:?} {} {:?} {:.1} ms{}{}",
            p.invoke.index,
            p.invoke.f,
            p.invoke.name.as_deref().unwrap_or(""),
            kind,
            (t1.saturating_sub(p.invoke.time_ns)) as f64 / 1e6,
            result
                .and_then(|r| r.token)
                .map_or(String::new(), |t| format!(" token {t}")),
            result
                .and_then(|r| r.error.as_deref())
                .map_or(String::new(), |e| format!(" {e}")),
        );
        let _ = write!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>",
            row_h - 4.0,
            color(p.invoke.f, kind),
            esc(&tip)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"10\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{:.1} s</text></svg>",
        height - 5.0,
        WIDTH - 60.0,
        height - 5.0,
        end / 1e9
    );

    // Latency over time (log scale, 1 ms .. 10 s).
    let lat_h = 240.0;
    let y_of = |ms: f64| {
        let l = ms.clamp(1.0, 10_000.0).log10() / 4.0;
        10.0 + (1.0 - l) * (lat_h - 30.0)
    };
    let _ = write!(
        out,
        "<h2>Latency</h2><p>Each completed client call: time of invocation vs latency (log scale).</p>\
         <svg width=\"{WIDTH}\" height=\"{lat_h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (start, stop, label) in &faults {
        let x0 = x(*start);
        let x1 = x(stop.unwrap_or(end_ns));
        let _ = write!(
            out,
            "<rect x=\"{x0:.1}\" y=\"0\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ffcdd2\" opacity=\"0.5\"><title>{}</title></rect>",
            (x1 - x0).max(1.0),
            lat_h - 20.0,
            esc(label)
        );
    }
    for ms in [1.0, 10.0, 100.0, 1_000.0, 10_000.0] {
        let y = y_of(ms);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"2\" y=\"{:.1}\" font-size=\"10\">{ms} ms</text>",
            y + 3.0
        );
    }
    for p in &pairs {
        if p.invoke.process < 0 || matches!(p.invoke.f, F::Read | F::Write | F::FinalRead) {
            continue;
        }
        let Some(c) = p.complete else { continue };
        let ms = (c.time_ns.saturating_sub(p.invoke.time_ns)) as f64 / 1e6;
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"{}\"/>",
            x(p.invoke.time_ns),
            y_of(ms),
            color(p.invoke.f, c.kind)
        );
    }
    out.push_str("</svg>");

    // Faults and violations.
    out.push_str("<h2>Faults</h2><table><tr><th>from</th><th>to</th><th>fault</th></tr>");
    for (start, stop, label) in &faults {
        let _ = write!(
            out,
            "<tr><td>{:.3} s</td><td>{}</td><td>{}</td></tr>",
            *start as f64 / 1e9,
            stop.map_or("never healed".to_string(), |s| format!(
                "{:.3} s",
                s as f64 / 1e9
            )),
            esc(label)
        );
    }
    out.push_str("</table><h2>Violations</h2>");
    let mut any = false;
    for c in &summary.checkers {
        for v in &c.violations {
            any = true;
            let _ = write!(
                out,
                "<h3>{}</h3><p>{}</p><pre>",
                esc(&c.checker),
                esc(&v.message)
            );
            for index in &v.ops {
                if let Some(op) = history.ops.get(*index as usize) {
                    // The op and its partner (invocation or completion).
                    let partner = pairs.iter().find(|p| {
                        p.invoke.index == op.index
                            || p.complete.is_some_and(|c| c.index == op.index)
                    });
                    if let Some(p) = partner {
                        let _ = writeln!(
                            out,
                            "{}",
                            esc(&serde_json::to_string(p.invoke).unwrap_or_default())
                        );
                        if let Some(c) = p.complete {
                            let _ = writeln!(
                                out,
                                "{}",
                                esc(&serde_json::to_string(c).unwrap_or_default())
                            );
                        }
                    }
                }
            }
            out.push_str("</pre>");
        }
    }
    if !any {
        out.push_str("<p>None.</p>");
    }
    let nemesis_ops = history.ops.iter().filter(|o| o.process == NEMESIS).count();
    let _ = write!(
        out,
        "<p style=\"color:#888\">{} history entries, {nemesis_ops} from the nemesis.</p></body></html>",
        history.ops.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{CheckOptions, Verdict};
    use crate::history::{Args, OpResult, Recorder};
    use crate::run::{RunConfig, TargetKind, check_history};

    #[test]
    fn the_report_shows_faults_ops_and_violations() {
        let r = Recorder::new();
        let fault = r.invoke(
            NEMESIS,
            None,
            F::Nemesis,
            None,
            Args {
                fault: Some("isolate the <leader>".into()),
                ..Args::default()
            },
        );
        // Two clients granted one name with one token: a violation.
        for p in 0..2 {
            let lease = 10 + p as u64;
            let inv = r.invoke(
                p,
                Some(1),
                F::Acquire,
                Some("a"),
                Args {
                    lease_id: Some(lease),
                    ..Args::default()
                },
            );
            r.complete(
                inv,
                OpType::Ok,
                OpResult {
                    token: Some(7),
                    valid_until_ns: Some(u64::MAX / 2),
                    ..OpResult::default()
                },
            );
        }
        r.complete(fault, OpType::Info, OpResult::default());
        let history = r.history();
        let mut config = RunConfig::new(TargetKind::Unsafe, 3);
        config.check = CheckOptions::default();
        let summary = check_history(&history, &config, 1);
        assert_eq!(summary.verdict, Verdict::Fail);
        let page = html(&history, &summary);
        assert!(page.contains("isolate the &lt;leader&gt;"));
        assert!(page.contains("token 7 granted to lease 10 and to lease 11"));
        assert!(page.contains("<svg"));
        assert!(page.matches("<rect").count() >= 3);
    }
}
