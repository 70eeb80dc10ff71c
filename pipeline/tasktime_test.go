package pipeline_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

func TestTaskTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tt := pipeline.NewTaskTimer(nil)
		time.Sleep(100 * time.Millisecond) // idle
		tt.Set(pipeline.Busy)
		time.Sleep(300 * time.Millisecond)
		tt.Set(pipeline.Backpressured)
		time.Sleep(600 * time.Millisecond)
		first := tt.Times()
		want := pipeline.TaskTimes{Idle: 100 * time.Millisecond, Busy: 300 * time.Millisecond, Backpressured: 600 * time.Millisecond}
		if first != want {
			t.Fatalf("times %+v, want %+v", first, want)
		}
		idle, busy, bp := first.PerSecond(pipeline.TaskTimes{})
		if idle != 100 || busy != 300 || bp != 600 {
			t.Fatalf("ms/s = %v/%v/%v, want 100/300/600", idle, busy, bp)
		}
		tt.Set(pipeline.Backpressured) // no change
		tt.Set(pipeline.Idle)
		time.Sleep(time.Second)
		idle, busy, bp = tt.Times().PerSecond(first)
		if idle != 1000 || busy != 0 || bp != 0 {
			t.Fatalf("second interval ms/s = %v/%v/%v, want 1000/0/0", idle, busy, bp)
		}
		var nilTimer *pipeline.TaskTimer
		nilTimer.Set(pipeline.Busy) // must not panic
		if nilTimer.Times() != (pipeline.TaskTimes{}) {
			t.Fatal("nil timer reported time")
		}
	})
}
