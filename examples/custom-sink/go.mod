module github.com/spillway-io/spillway/examples/custom-sink

go 1.26.0

require github.com/spillway-io/spillway v0.0.0

replace github.com/spillway-io/spillway => ../..
