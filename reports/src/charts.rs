//! The report's SVG charts, drawn with plotters' SVG backend. Text is left
//! to SVG `<text>` elements with a generic font family: plotters is built
//! without its `ttf` and `ab_glyph` features, so it measures text with its
//! naive estimate and never loads a system font, and the browser picks the
//! face. Every number is a pure function of the run, so the bytes are too.

use std::collections::BTreeMap;

use faultline_sim::history::{OpKind, Outcome};
use faultline_sim::runner::RunResult;
use plotters::prelude::*;

/// Chart width and height, in SVG pixels.
const W: u32 = 900;
const H: u32 = 260;
/// Throughput and latency are bucketed this many ms at a time.
const BUCKET_MS: u64 = 100;
const FAULT_SHADE: RGBColor = RGBColor(255, 214, 214);

/// A fault window: when it began and ended, in seconds, and what it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub from: f64,
    pub to: f64,
    pub what: String,
}

/// Pair each "start X" of the timeline with the next "end X".
pub fn fault_windows(r: &RunResult) -> Vec<Window> {
    let mut open: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut out = Vec::new();
    for e in &r.timeline {
        let at = e.at.as_secs_f64();
        if let Some(what) = e.what.strip_prefix("start ") {
            open.entry(what.to_string()).or_default().push(at);
        } else if let Some(what) = e.what.strip_prefix("end ") {
            if let Some(from) = open.get_mut(what).and_then(|v| (!v.is_empty()).then(|| v.remove(0))) {
                out.push(Window { from, to: at, what: what.to_string() });
            }
        }
    }
    let end = r.sim_time.as_secs_f64();
    for (what, starts) in open {
        for from in starts {
            out.push(Window { from, to: end, what: what.clone() });
        }
    }
    out.sort_by(|a, b| a.from.total_cmp(&b.from));
    out
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}

fn shade<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    windows: &[Window],
    y: (f64, f64),
) -> anyhow::Result<()> {
    chart
        .draw_series(
            windows.iter().map(|w| Rectangle::new([(w.from, y.0), (w.to, y.1)], FAULT_SHADE.mix(0.6).filled())),
        )
        .map_err(err)?
        .label("fault in force")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], FAULT_SHADE.filled()));
    Ok(())
}

/// Acknowledged sends per second and send latency (mean and max per
/// bucket), over simulated time, fault windows shaded.
pub fn throughput_latency(r: &RunResult) -> anyhow::Result<String> {
    let end = r.sim_time.as_secs_f64().max(0.1);
    let buckets = (r.sim_time.as_millis() as u64 / BUCKET_MS + 1) as usize;
    let mut acked = vec![0u64; buckets];
    let mut lat_sum = vec![0f64; buckets];
    let mut lat_max = vec![0f64; buckets];
    for op in &r.history.ops {
        if let (OpKind::Send { .. }, Outcome::Ok) = (&op.kind, &op.outcome) {
            let b = ((op.complete_ns / 1_000_000 / BUCKET_MS) as usize).min(buckets - 1);
            let ms = (op.complete_ns.saturating_sub(op.invoke_ns)) as f64 / 1e6;
            acked[b] += 1;
            lat_sum[b] += ms;
            lat_max[b] = lat_max[b].max(ms);
        }
    }
    let per_s = 1000.0 / BUCKET_MS as f64;
    let x = |b: usize| (b as u64 * BUCKET_MS) as f64 / 1000.0;
    let tput: Vec<(f64, f64)> = acked.iter().enumerate().map(|(b, n)| (x(b), *n as f64 * per_s)).collect();
    let mean: Vec<(f64, f64)> =
        (0..buckets).filter(|b| acked[*b] > 0).map(|b| (x(b), lat_sum[b] / acked[b] as f64)).collect();
    let max: Vec<(f64, f64)> = (0..buckets).filter(|b| acked[*b] > 0).map(|b| (x(b), lat_max[b])).collect();
    let windows = fault_windows(r);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H * 2)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(H);
        let ymax = tput.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&top)
            .caption("acknowledged sends per second", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..ymax)
            .map_err(err)?;
        c.configure_mesh().x_desc("simulated seconds").light_line_style(WHITE).draw().map_err(err)?;
        shade(&mut c, &windows, (0.0, ymax))?;
        c.draw_series(LineSeries::new(tput, BLUE.stroke_width(2)))
            .map_err(err)?
            .label("acks/s")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLUE));
        c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(err)?;

        let lmax = max.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&bottom)
            .caption("send latency (ms), per 100 ms of completions", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..lmax)
            .map_err(err)?;
        c.configure_mesh().x_desc("simulated seconds").light_line_style(WHITE).draw().map_err(err)?;
        shade(&mut c, &windows, (0.0, lmax))?;
        c.draw_series(LineSeries::new(mean, GREEN.stroke_width(2)))
            .map_err(err)?
            .label("mean")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], GREEN));
        c.draw_series(LineSeries::new(max, RED))
            .map_err(err)?
            .label("max")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED));
        c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Per partition: the end offset the producers learned (highest
/// acknowledged offset + 1) and the high watermark ListOffsets reported,
/// over simulated time.
pub fn offsets(r: &RunResult) -> anyhow::Result<String> {
    type Series = (Vec<(f64, f64)>, Vec<(f64, f64)>);
    let mut per: BTreeMap<String, Series> = BTreeMap::new();
    let mut acked_end: BTreeMap<String, f64> = BTreeMap::new();
    let mut ops: Vec<&faultline_sim::history::Op> = r.history.ops.iter().collect();
    ops.sort_by_key(|o| (o.complete_ns, o.index));
    for op in ops {
        let t = op.complete_ns as f64 / 1e9;
        match (&op.kind, &op.outcome) {
            (OpKind::Send { topic, partition: Some(p), offset: Some(o), .. }, Outcome::Ok) => {
                let name = format!("{topic}-{p}");
                let e = acked_end.entry(name.clone()).or_insert(0.0);
                if (*o + 1) as f64 > *e {
                    *e = (*o + 1) as f64;
                    per.entry(name).or_default().0.push((t, *e));
                }
            }
            (OpKind::EndOffsets { ends }, Outcome::Ok) => {
                for e in ends {
                    let name = format!("{}-{}", e.partition.topic, e.partition.partition);
                    per.entry(name).or_default().1.push((t, e.offset as f64));
                }
            }
            _ => {}
        }
    }
    let end = r.sim_time.as_secs_f64().max(0.1);
    let ymax = per.values().flat_map(|(a, b)| a.iter().chain(b)).map(|p| p.1).fold(1.0, f64::max) * 1.05;
    let windows = fault_windows(r);
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H + 60)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "per partition: acknowledged end offset (line) and ListOffsets high watermark (dots)",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..ymax)
            .map_err(err)?;
        c.configure_mesh().x_desc("simulated seconds").light_line_style(WHITE).draw().map_err(err)?;
        shade(&mut c, &windows, (0.0, ymax))?;
        for (i, (name, (acked, hw))) in per.iter().enumerate() {
            let color = palette[i % palette.len()];
            let mut steps = Vec::new();
            for w in acked.windows(2) {
                steps.push(w[0]);
                steps.push((w[1].0, w[0].1));
            }
            if let Some(l) = acked.last() {
                steps.push(*l);
                steps.push((end, l.1));
            }
            c.draw_series(LineSeries::new(steps, color.stroke_width(2)))
                .map_err(err)?
                .label(format!("{name} acknowledged end"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color));
            c.draw_series(hw.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(err)?
                .label(format!("{name} high watermark"))
                .legend(move |(x, y)| Circle::new((x + 6, y), 3, color.filled()));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One message a node received.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub at: f64,
    pub from: String,
    pub to: String,
    pub bytes: u64,
}

/// Messages from the trace's `net` events: "T NODE net recv N bytes D from
/// PEER", the peer an address turmoil gave a host in registration order
/// (192.168.0.1 is the first) or "host:port".
pub fn messages(r: &RunResult) -> Vec<Message> {
    let Some(lines) = r.trace.lines() else { return Vec::new() };
    let host_of = |peer: &str| -> String {
        let addr = peer.rsplit_once(':').map_or(peer, |(a, _)| a);
        if let Some(n) = addr.strip_prefix("192.168.0.").and_then(|n| n.parse::<usize>().ok()) {
            if let Some(h) = n.checked_sub(1).and_then(|i| r.hosts.get(i)) {
                return h.clone();
            }
        }
        addr.to_string()
    };
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let at: f64 = w.next()?.parse().ok()?;
            let to = w.next()?.to_string();
            if w.next()? != "net" || w.next()? != "recv" {
                return None;
            }
            let bytes: u64 = w.next()?.parse().ok()?;
            let _ = (w.next()?, w.next()?);
            if w.next()? != "from" {
                return None;
            }
            Some(Message { at, from: host_of(w.next()?), to, bytes })
        })
        .collect()
}

/// Most messages one diagram draws.
pub const MAX_MESSAGES: usize = 80;

/// A space-time diagram: one vertical lane per host, time downwards, an
/// arrow per message received in `[from, to]` seconds (drawn from the
/// previous millisecond, the trace records only receipt), `mark` a
/// horizontal line at the anomaly.
pub fn space_time(r: &RunResult, from: f64, to: f64, mark: f64) -> anyhow::Result<String> {
    let msgs: Vec<Message> =
        messages(r).into_iter().filter(|m| m.at >= from && m.at <= to).take(MAX_MESSAGES).collect();
    let mut lanes: Vec<String> = Vec::new();
    for h in r.hosts.iter() {
        if msgs.iter().any(|m| &m.from == h || &m.to == h) {
            lanes.push(h.clone());
        }
    }
    for m in &msgs {
        for h in [&m.from, &m.to] {
            if !lanes.contains(h) {
                lanes.push(h.clone());
            }
        }
    }
    let lane = |h: &str| lanes.iter().position(|l| l == h).unwrap_or(0) as f64;
    let n = lanes.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(format!("messages received between {from:.3} s and {to:.3} s"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(10)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..n - 0.5, to..from)
            .map_err(err)?;
        c.configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("simulated seconds")
            .light_line_style(WHITE)
            .draw()
            .map_err(err)?;
        for (i, h) in lanes.iter().enumerate() {
            let x = i as f64;
            c.draw_series(std::iter::once(PathElement::new([(x, from), (x, to)], BLACK.mix(0.4)))).map_err(err)?;
            c.draw_series(std::iter::once(Text::new(h.clone(), (x - 0.2, from), ("sans-serif", 13)))).map_err(err)?;
        }
        c.draw_series(std::iter::once(PathElement::new([(-0.5, mark), (n - 0.5, mark)], RED.stroke_width(2))))
            .map_err(err)?;
        c.draw_series(std::iter::once(Text::new("anomaly", (-0.45, mark), ("sans-serif", 12).into_font().color(&RED))))
            .map_err(err)?;
        for m in &msgs {
            let (x0, x1) = (lane(&m.from), lane(&m.to));
            let y0 = (m.at - 0.001).max(from);
            let color = if x1 < x0 { GREEN } else { BLUE };
            c.draw_series(std::iter::once(PathElement::new([(x0, y0), (x1, m.at)], color))).map_err(err)?;
            c.draw_series(std::iter::once(Circle::new((x1, m.at), 2, color.filled()))).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}
