// Command perf is xsessiond's benchmark harness: it builds a netns rig, runs
// a traffic generator against xsessiond and against kernel-socket baselines,
// and writes results as JSON, a Markdown table and plots.
package main
