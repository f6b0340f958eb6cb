"""Small server-rendered SVG charts (no chart library, no script): a stacked bar chart and a
line chart with one line per series. Colours come from CSS classes (`c-<series>`), so the
Content-Security-Policy needs no inline style; the SVG scales to its box (viewBox), so it
never widens a page. Every value is escaped (format_html)."""

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 420, 170
LEFT, RIGHT, TOP, BOTTOM = 34, 8, 10, 22


def _scale_top(peak: int) -> int:
    """A round axis maximum at or above `peak` (1 when everything is zero)."""
    if peak <= 0:
        return 1
    step = 1
    while step * 10 < peak:
        step *= 10
    for mult in (1, 2, 5, 10):
        if step * mult >= peak:
            return step * mult
    return peak


def _n(x: float) -> str:
    return f"{x:.1f}"


def _class(name: str) -> str:
    return "c-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())[:40]


def _frame(title: str, top: int, body: SafeString, labels: list[tuple[float, str]]) -> SafeString:
    plot_h = HEIGHT - TOP - BOTTOM
    axis = format_html(
        '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
        '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
        '<text class="tick" x="{tx}" y="{ty0}" text-anchor="end">{top}</text>'
        '<text class="tick" x="{tx}" y="{b}" text-anchor="end">0</text>',
        l=LEFT,
        r=WIDTH - RIGHT,
        t=TOP,
        b=TOP + plot_h,
        tx=LEFT - 4,
        ty0=TOP + 8,
        top=top,
    )
    xlabels = format_html_join(
        "",
        '<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>',
        ((_n(x), HEIGHT - 6, text) for x, text in labels),
    )
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}" '
        'preserveAspectRatio="xMidYMid meet"><title>{}</title>{}{}{}</svg>',
        WIDTH,
        HEIGHT,
        title,
        title,
        axis,
        body,
        xlabels,
    )


def _every(n: int, most: int = 5) -> int:
    """Label every k-th point so that at most `most` labels share the axis."""
    return max(1, -(-n // most))


def stacked_bars(title: str, labels: list[str], series: list[tuple[str, list[int]]]) -> SafeString:
    """One bar per label, the series stacked bottom-up in the order given."""
    if not labels:
        return format_html('<p class="muted" title="{}">No data yet.</p>', title)
    series = [
        (name, list(values[: len(labels)]) + [0] * (len(labels) - len(values)))
        for name, values in series
    ]
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    top = _scale_top(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(labels)
    bar_w = max(1.0, slot * 0.7)
    parts = []
    for i, label in enumerate(labels):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base: float = TOP + plot_h
        for name, values in series:
            if not values[i]:
                continue
            h = plot_h * values[i] / top
            base -= h
            parts.append(
                format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}">'
                    "<title>{}: {} {}</title></rect>",
                    _class(name),
                    _n(x),
                    _n(base),
                    _n(bar_w),
                    _n(h),
                    label,
                    values[i],
                    name,
                )
            )
    k = _every(len(labels))
    ticks = [(LEFT + slot * (i + 0.5), t) for i, t in enumerate(labels) if i % k == 0]
    body = mark_safe("".join(parts))  # noqa: S308 - each part built by format_html
    if not any(totals):
        body = format_html(
            '{}<text class="empty" x="{}" y="{}" text-anchor="middle">none</text>',
            body,
            _n(LEFT + plot_w / 2),
            _n(TOP + plot_h / 2),
        )
    return _frame(title, top, body, ticks)


def lines(title: str, labels: list[str], series: list[tuple[str, list[int | None]]]) -> SafeString:
    """One line per series over shared x labels (None: no point there); a series with a
    single point shows as a dot."""
    if not labels:
        return format_html('<p class="muted" title="{}">No data yet.</p>', title)
    values = [v for _, vs in series for v in vs if v is not None]
    top = _scale_top(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(labels)

    def xy(i: int, v: int) -> tuple[float, float]:
        return LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * v / top

    parts = []
    for n, (name, vs) in enumerate(series):
        points = [(i, v) for i, v in enumerate(vs[: len(labels)]) if v is not None]
        css = line_class(n)
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in points))
            parts.append(format_html('<polyline class="line {}" points="{}"/>', css, path))
        for i, v in points:
            x, y = xy(i, v)
            parts.append(
                format_html(
                    '<circle class="dot {}" cx="{}" cy="{}" r="3">'
                    "<title>{} {}: {}</title></circle>",
                    css,
                    _n(x),
                    _n(y),
                    name,
                    labels[i],
                    v,
                )
            )
    k = _every(len(labels))
    ticks = [(LEFT + slot * (i + 0.5), t) for i, t in enumerate(labels) if i % k == 0]
    return _frame(title, top, mark_safe("".join(parts)), ticks)  # noqa: S308


def line_class(index: int) -> str:
    """The colour class of a line chart's `index`-th series (LINE_COLOURS of them, reused)."""
    return f"c-s{index % LINE_COLOURS}"


LINE_COLOURS = 6


def legend(keys: list[tuple[str, str]]) -> SafeString:
    """(name, css class) colour keys, as an inline list under a chart."""
    items = format_html_join(
        "", '<li><span class="key {}"></span>{}</li>', ((c, n) for n, c in keys)
    )
    return format_html('<ul class="legend">{}</ul>', items)


def severity_class(label: str) -> str:
    return _class(label)
