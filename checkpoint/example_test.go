package checkpoint_test

import (
	"fmt"

	"github.com/spillway-io/spillway/checkpoint"
)

func ExamplePartition() {
	p := checkpoint.NewPartition(100) // resume from committed offset 100
	p.BeginBatch([]int64{100, 101, 102, 105})

	// Offsets complete out of order: the commit never passes 100.
	p.Ack([]int64{101, 105})
	fmt.Println(p.Committable())
	fmt.Println(p.DoneAbove()) // 103 and 104 were never delivered: done

	p.Ack([]int64{100})
	fmt.Println(p.Committable())
	// Output:
	// 100 true
	// [[101 101] [103 105]]
	// 102 true
}

func ExamplePartition_Revoke() {
	p := checkpoint.NewPartition(0)
	p.Begin(0)
	p.Begin(1)
	idle := p.Idle()
	p.Ack([]int64{0})
	select {
	case <-idle:
		fmt.Println("idle")
	default:
		fmt.Println("pending:", p.Pending())
	}
	p.Ack([]int64{1})
	<-idle
	// Drained: revoke and commit what is done. Later acks are ignored.
	fmt.Println(p.Revoke())
	fmt.Println(p.Committable())
	// Output:
	// pending: 1
	// 2 true
	// 2 false
}
