package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"sort"
	"strings"
)

// Chart geometry: a log-scale latency axis from 10 us to 10 s against a
// linear throughput axis.
const (
	chartW, chartH = 1000, 640
	left, right    = 90, 30
	top, bottom    = 60, 70
	minLogUs       = 1.0 // 10 us
	maxLogUs       = 7.0 // 10 s, so that overload points stay on the chart
)

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{220, 220, 220, 255}
)

type plot struct {
	img  *image.RGBA
	maxX float64 // requests per second at the right edge
}

func (p *plot) x(rps float64) int {
	return left + int(rps/p.maxX*float64(chartW-left-right))
}

func (p *plot) y(us float64) int {
	l := math.Log10(math.Max(us, 1))
	l = math.Max(minLogUs, math.Min(maxLogUs, l))
	return chartH - bottom - int((l-minLogUs)/(maxLogUs-minLogUs)*float64(chartH-top-bottom))
}

// palette colours the scenarios in name order.
var palette = []color.RGBA{
	{30, 90, 200, 255}, {200, 40, 40, 255}, {20, 140, 60, 255}, {150, 60, 170, 255},
	{230, 120, 0, 255}, {0, 150, 160, 255}, {120, 90, 40, 255}, {90, 90, 90, 255},
	{200, 60, 140, 255}, {100, 160, 20, 255},
}

// writeChart draws latency against throughput. A scenario with an open-loop
// sweep is a solid p50 line and a dotted p99 line through its points. A
// closed-loop run is a bar from p50 to p99 at its median throughput.
func writeChart(path string, sums map[string]*summary) error {
	p := &plot{img: image.NewRGBA(image.Rect(0, 0, chartW, chartH))}
	draw.Draw(p.img, p.img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	for _, s := range sums {
		p.maxX = math.Max(p.maxX, s.rps.hi)
	}
	p.maxX = niceCeil(math.Max(p.maxX*1.1, 1000))
	p.axes()
	drawText(p.img, left, 12, "LATENCY (LOG) AGAINST THROUGHPUT", black, 3)
	drawText(p.img, left, 38, "LINES: OPEN-LOOP SWEEP, SOLID P50, DOTTED P99. BARS: CLOSED LOOP P50 TO P99",
		black, 2)

	colors := map[string]color.RGBA{}
	for i, base := range baseNames(sums) {
		colors[base] = palette[i%len(palette)]
		p.legend(i, base, colors[base])
	}
	for _, base := range baseNames(sums) {
		p.sweep(sweepPoints(sums, base), colors[base])
		if s := sums[base]; s != nil {
			p.bar(s, colors[base])
		}
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create chart: %w", err)
	}
	if err := png.Encode(f, p.img); err != nil {
		f.Close()
		return fmt.Errorf("encode chart %s: %w", path, err)
	}
	return f.Close()
}

// baseName strips the "-open-FRACTION" suffix of an open-loop scenario.
func baseName(name string) string {
	if i := strings.Index(name, "-open-"); i >= 0 {
		return name[:i]
	}
	return name
}

func baseNames(sums map[string]*summary) []string {
	seen := map[string]bool{}
	var out []string
	for n := range sums {
		if b := baseName(n); !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	sort.Strings(out)
	return out
}

func sweepPoints(sums map[string]*summary, base string) []*summary {
	var pts []*summary
	for n, s := range sums {
		if s.offered > 0 && baseName(n) == base {
			pts = append(pts, s)
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].offered < pts[j].offered })
	return pts
}

// legend writes entry i in a column at the right of the plot area.
func (p *plot) legend(i int, name string, c color.Color) {
	x := chartW - right - 300
	y := top + 10 + i*18
	for dy := 0; dy < 10; dy++ {
		p.hline(x, x+16, y+dy, c)
	}
	drawText(p.img, x+24, y, name, c, 2)
}

func niceCeil(v float64) float64 {
	step := math.Pow(10, math.Floor(math.Log10(v)))
	return math.Ceil(v/step) * step
}

func (p *plot) axes() {
	for l := minLogUs; l <= maxLogUs; l++ {
		y := p.y(math.Pow(10, l))
		p.hline(left, chartW-right, y, grey)
		label := map[float64]string{1: "10US", 2: "100US", 3: "1MS", 4: "10MS", 5: "100MS", 6: "1S", 7: "10S"}[l]
		drawText(p.img, left-textWidth(label, 2)-8, y-5, label, black, 2)
	}
	for i := 0; i <= 5; i++ {
		rps := p.maxX * float64(i) / 5
		x := p.x(rps)
		p.vline(x, top, chartH-bottom, grey)
		label := fmt.Sprintf("%.0fK", rps/1000)
		drawText(p.img, x-textWidth(label, 2)/2, chartH-bottom+10, label, black, 2)
	}
	p.hline(left, chartW-right, chartH-bottom, black)
	p.vline(left, top, chartH-bottom, black)
	drawText(p.img, chartW/2-80, chartH-30, "THROUGHPUT REQ/S", black, 2)
}

func (p *plot) sweep(pts []*summary, c color.RGBA) {
	for i, s := range pts {
		x := p.x(s.rps.med)
		p.dot(x, p.y(s.p50.med), c)
		p.dot(x, p.y(s.p99.med), c)
		if i > 0 {
			px := p.x(pts[i-1].rps.med)
			p.line(px, p.y(pts[i-1].p50.med), x, p.y(s.p50.med), c, false)
			p.line(px, p.y(pts[i-1].p99.med), x, p.y(s.p99.med), c, true)
		}
	}
}

// bar draws a closed-loop result. freeDiameter's own benchmark reports only
// a mean, which is drawn as a short bar at the mean.
func (p *plot) bar(s *summary, c color.RGBA) {
	x := p.x(s.rps.med)
	y50, y99 := p.y(s.p50.med), p.y(s.p99.med)
	if s.p50.med == 0 {
		y50 = p.y(s.runs[0].Latency.Mean)
		y99 = y50
	}
	for dx := -1; dx <= 1; dx++ {
		p.vline(x+dx, min(y50, y99), max(y50, y99), c)
	}
	p.hline(x-6, x+6, y50, c)
	p.hline(x-6, x+6, y99, c)
}

func (p *plot) hline(x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		p.img.Set(x, y, c)
	}
}

func (p *plot) vline(x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		p.img.Set(x, y, c)
	}
}

func (p *plot) dot(x, y int, c color.Color) {
	for dy := -3; dy <= 3; dy++ {
		for dx := -3; dx <= 3; dx++ {
			p.img.Set(x+dx, y+dy, c)
		}
	}
}

// line draws a two-pixel-wide segment by stepping along its longer axis,
// leaving gaps when dotted.
func (p *plot) line(x0, y0, x1, y1 int, c color.Color, dotted bool) {
	n := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= n; i++ {
		if dotted && i%8 >= 4 {
			continue
		}
		x := x0 + (x1-x0)*i/n
		y := y0 + (y1-y0)*i/n
		p.img.Set(x, y, c)
		p.img.Set(x, y+1, c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
