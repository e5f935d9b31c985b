package tcshift

import (
	"strings"

	"github.com/seqshiftd/seqshiftd/counter"
)

// The programs' counters as counter families, built from Counters: one family per Name, with
// a reason label where the family's counters have one and a direction label where they have
// one, so that status and metrics show them like every other counter, with no code per counter.
var (
	counterDescs []*counter.Desc
	// counterSlot[s] locates Stat s: its family in counterDescs and its index in the family.
	counterSlot  [NumStats]struct{ family, index int }
	counterTable *counter.Table
)

func init() {
	at := map[string]int{}
	for s, c := range Counters {
		i, ok := at[c.Name]
		if !ok {
			i = len(counterDescs)
			at[c.Name] = i
			counterDescs = append(counterDescs, &counter.Desc{
				Name: "kernel_" + c.Name + "_packets_total",
				Help: "Kernel datapath (tc programs): " + strings.TrimSuffix(c.Help, "."),
			})
		}
		d := counterDescs[i]
		counterSlot[s] = struct{ family, index int }{i, len(d.Values)}
		d.Values = append(d.Values, []string{c.Label, c.Dir})
	}
	for _, d := range counterDescs {
		// Keep only the labels some counter of the family uses.
		var keep []int
		var labels []string
		for li, name := range []string{"reason", "direction"} {
			for _, v := range d.Values {
				if v[li] != "" {
					keep, labels = append(keep, li), append(labels, name)
					break
				}
			}
		}
		var status []string
		for range labels {
			status = append(status, "%s")
		}
		d.Status = strings.Join(append([]string{strings.TrimSuffix(strings.TrimSuffix(d.Name, "_total"), "_packets")}, status...), "_")
		if len(labels) == 0 {
			d.Values = nil
			continue
		}
		d.Labels = labels
		for vi, v := range d.Values {
			var kept []string
			for _, li := range keep {
				kept = append(kept, v[li])
			}
			d.Values[vi] = kept
		}
		d.Help += ", by " + strings.Join(labels, " and ") + "."
	}
	for _, d := range counterDescs {
		if !strings.HasSuffix(d.Help, ".") {
			d.Help += "."
		}
	}
	counterTable = counter.NewTable(counterDescs...)
}

// Descs implements counter.Set: the programs' counter families.
func (d *Datapath) Descs() []*counter.Desc { return counterTable.Descs() }

// Values implements counter.Set: the per-CPU counters summed, read at scrape time.
func (d *Datapath) Values() [][]uint64 {
	st := d.Stats()
	out := make([][]uint64, len(counterDescs))
	for i, desc := range counterDescs {
		out[i] = make([]uint64, desc.Len())
	}
	for s, v := range st {
		slot := counterSlot[s]
		out[slot.family][slot.index] = v
	}
	return out
}
