package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// series is one line of a plot: the medians of the rows it selects.
type series struct {
	name string
	xys  plotter.XYs
}

// unavailable lists the implementations whose rows in the selection have
// no numbers, for the plot's caption.
func unavailable(rows []Result) []string {
	var out []string
	for _, r := range rows {
		if r.Status != StatusOK && !slices.Contains(out, r.Impl) {
			out = append(out, r.Impl)
		}
	}
	return out
}

// linePlot draws series as lines with points; a caption under the title
// names implementations with no numbers.
func linePlot(title, xlabel, ylabel string, ss []series, missing []string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	if len(missing) > 0 {
		p.Title.Text += "\n(not available: " + strings.Join(missing, ", ") + ")"
	}
	p.X.Label.Text, p.Y.Label.Text = xlabel, ylabel
	p.Y.Min = 0
	var vs []any
	for _, s := range ss {
		if len(s.xys) > 0 {
			vs = append(vs, s.name, s.xys)
		}
	}
	if len(vs) == 0 {
		return p, nil
	}
	if err := plotutil.AddLinePoints(p, vs...); err != nil {
		return nil, fmt.Errorf("plot %s: %w", title, err)
	}
	return p, nil
}

// selectSeries groups rows by implementation, in order of impls, and takes
// (x(row), median y(row)) from the rows with numbers.
func selectSeries(rows []Result, impls []string, x func(Result) float64, y func(Result) Summary) []series {
	var ss []series
	for _, impl := range impls {
		s := series{name: impl}
		for _, r := range rows {
			if r.Impl == impl && r.Status == StatusOK && y(r).N > 0 {
				s.xys = append(s.xys, plotter.XY{X: x(r), Y: y(r).Median})
			}
		}
		slices.SortFunc(s.xys, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		ss = append(ss, s)
	}
	return ss
}

var receiveImpls = []string{ImplXsessiond, ImplKernel, ImplKernelReuseport, ImplXDPDrop}

// RateByPayloadPlot is delivered Mpps by payload size at queues/flows.
func RateByPayloadPlot(results []Result, queues, flows int) (*plot.Plot, error) {
	var rows []Result
	for _, r := range results {
		if r.Kind == KindReceive && r.Queues == queues && r.Flows == flows {
			rows = append(rows, r)
		}
	}
	ss := selectSeries(rows, receiveImpls,
		func(r Result) float64 { return float64(r.Payload) },
		func(r Result) Summary { return scaled(r.PPS, 1e-6) })
	return linePlot(fmt.Sprintf("UDP receive rate, %d queues, %d flows", queues, flows),
		"UDP payload (bytes)", "delivered Mpps", ss, unavailable(rows))
}

// ScalingPlot is delivered Mpps by queue count at a payload and flows.
func ScalingPlot(results []Result, payload, flows int) (*plot.Plot, error) {
	var rows []Result
	for _, r := range results {
		if r.Kind == KindReceive && r.Payload == payload && r.Flows == flows {
			rows = append(rows, r)
		}
	}
	ss := selectSeries(rows, receiveImpls,
		func(r Result) float64 { return float64(r.Queues) },
		func(r Result) Summary { return scaled(r.PPS, 1e-6) })
	return linePlot(fmt.Sprintf("UDP receive scaling, %d-byte payload, %d flows", payload, flows),
		"queues", "delivered Mpps", ss, unavailable(rows))
}

// LatencyCDFPlot is the round-trip CDF of every echo row, µs on a log axis.
func LatencyCDFPlot(results []Result) (*plot.Plot, error) {
	var rows []Result
	var ss []series
	for _, r := range results {
		if r.Kind != KindEcho {
			continue
		}
		rows = append(rows, r)
		s := series{name: r.Impl}
		for _, pt := range r.CDF {
			s.xys = append(s.xys, plotter.XY{X: max(pt.Micros, 0.01), Y: pt.Fraction})
		}
		ss = append(ss, s)
	}
	p, err := linePlot("UDP echo round trip", "round-trip time (µs)", "fraction of requests", ss, unavailable(rows))
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(ss, func(s series) bool { return len(s.xys) > 0 }) {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Y.Max = 1
	return p, nil
}

func scaled(s Summary, k float64) Summary {
	return Summary{Median: s.Median * k, Min: s.Min * k, Max: s.Max * k, N: s.N}
}

// WritePNG renders p as a PNG.
func WritePNG(w io.Writer, p *plot.Plot) error {
	wt, err := p.WriterTo(16*vg.Centimeter, 10*vg.Centimeter, "png")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}
