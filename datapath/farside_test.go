package datapath

import (
	"net/netip"
	"testing"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/tcshift"
)

// TestClientFacingIfindex_OnlyTheFlowsOwnInterfaceCounts: a packet of a flow names the
// interface the flow's map entry belongs to only when it was caught where the client side
// meets the gateway: a client's segment arriving, a segment to the client leaving. Caught on
// the server side's intercept interface it names none, so that neither the entry moves there
// (the client-facing programs would stop shifting the flow) nor the segment is shifted there
// as well as at the client-facing interface.
func TestClientFacingIfindex_OnlyTheFlowsOwnInterfaceCounts(t *testing.T) {
	table := flowtable.New(flowtable.Config{MaxFlows: 8})
	client, server := netip.MustParseAddrPort("198.18.1.2:40000"), netip.MustParseAddrPort("198.18.2.2:443")
	normal, err := table.Admit(client, server, flowtable.Init{ClientOffset: 1000})
	if err != nil {
		t.Fatal(err)
	}
	farOpened, err := table.Admit(netip.MustParseAddrPort("198.18.2.2:50000"), netip.MustParseAddrPort("198.18.1.2:22"),
		flowtable.Init{Exempt: flowtable.ExemptServerOpened})
	if err != nil {
		t.Fatal(err)
	}
	const clientSide, serverSide = 7, 9
	for _, tc := range []struct {
		name string
		f    *flowtable.Flow
		dir  flowtable.Dir
		meta tcshift.Meta
		want int
	}{
		{"client's segment arriving from the client", normal, flowtable.ClientToServer, tcshift.Meta{Hook: tcshift.HookIngress, Ifindex: clientSide}, clientSide},
		{"server's segment leaving toward the client", normal, flowtable.ServerToClient, tcshift.Meta{Hook: tcshift.HookEgress, Ifindex: clientSide}, clientSide},
		{"server's segment arriving on the server side", normal, flowtable.ServerToClient, tcshift.Meta{Hook: tcshift.HookIngress, Ifindex: serverSide}, 0},
		{"client's segment leaving toward the server", normal, flowtable.ClientToServer, tcshift.Meta{Hook: tcshift.HookEgress, Ifindex: serverSide}, 0},
		{"far-opened: its SYN leaving toward the client side", farOpened, flowtable.ClientToServer, tcshift.Meta{Hook: tcshift.HookEgress, Ifindex: clientSide}, clientSide},
		{"far-opened: the answer arriving from the client side", farOpened, flowtable.ServerToClient, tcshift.Meta{Hook: tcshift.HookIngress, Ifindex: clientSide}, clientSide},
		{"far-opened: its SYN arriving on the server side", farOpened, flowtable.ClientToServer, tcshift.Meta{Hook: tcshift.HookIngress, Ifindex: serverSide}, 0},
	} {
		if got := clientFacingIfindex(tc.f, tc.dir, tc.meta); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
