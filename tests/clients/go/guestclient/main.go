// Command guestclient is a small gRPC client of the guest agent written against Debian's own
// Go gRPC (golang-google-grpc-dev 1.33) and stubs that protoc-gen-go / protoc-gen-go-grpc
// generate from proto/boxlite/v1/guest.proto at test time (import path "gaclient/boxlitepb";
// the generated code is never committed). The system test tests/tests/client_go.rs builds it
// offline in GOPATH mode and runs it against the real agent.
//
// Usage:
//
//	guestclient [-timeout D] TARGET COMMAND [ARGS...]
//
// TARGET is anything grpc.Dial accepts: "unix:///path/agent.sock" (grpc-go 1.33 has no unix
// resolver: the passthrough resolver hands the whole target to the default dialer, which
// dials the socket, and :authority is "localhost") or "127.0.0.1:PORT".
//
// Commands:
//
//	ping                       Guest/Ping
//	quiesce [MOUNTPOINT...]    Guest/Quiesce (mountpoints: QuiesceRequest.mountpoints)
//	thaw                       Guest/Thaw
//	status                     Guest/FreezeStatus
//	metrics                    GuestMetrics/GetMetrics
//	health [SERVICE]           grpc.health.v1.Health/Check ("" = the whole server)
//
// Output: one JSON object on stdout per command, on one line:
//
//	{"cmd":"ping","ok":true,"response":{...}}              the response as protojson,
//	                                                         proto field names, defaults shown
//	{"cmd":"quiesce","ok":false,"code":"InvalidArgument","code_num":3,"message":"..."}
//
// Exit status: 0 when the call succeeded, 1 when it returned a gRPC error (printed as above),
// 2 for a usage error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/runtime/protoiface"
	"google.golang.org/protobuf/runtime/protoimpl"

	pb "gaclient/boxlitepb"
)

type result struct {
	Cmd      string          `json:"cmd"`
	Target   string          `json:"target"`
	OK       bool            `json:"ok"`
	Response json.RawMessage `json:"response,omitempty"`
	Code     string          `json:"code,omitempty"`
	CodeNum  uint32          `json:"code_num,omitempty"`
	Message  string          `json:"message,omitempty"`
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s [-timeout D] TARGET ping|quiesce [MOUNTPOINT...]|thaw|status|metrics|health [SERVICE]\n", os.Args[0])
	flag.PrintDefaults()
	os.Exit(2)
}

// call runs one RPC and returns its response (a proto message of either API generation).
func call(ctx context.Context, conn *grpc.ClientConn, cmd string, args []string) (interface{}, error) {
	guest := pb.NewGuestClient(conn)
	switch cmd {
	case "ping":
		return guest.Ping(ctx, &pb.PingRequest{})
	case "quiesce":
		return guest.Quiesce(ctx, &pb.QuiesceRequest{Mountpoints: args})
	case "thaw":
		return guest.Thaw(ctx, &pb.ThawRequest{})
	case "status":
		return guest.FreezeStatus(ctx, &pb.FreezeStatusRequest{})
	case "metrics":
		return pb.NewGuestMetricsClient(conn).GetMetrics(ctx, &pb.GetMetricsRequest{})
	case "health":
		service := ""
		if len(args) > 0 {
			service = args[0]
		}
		return grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
	}
	return nil, nil
}

// toJSON renders a response with protojson: proto field names, unpopulated fields shown (so
// frozen_count 0 is printed, not omitted). The health messages come from grpc-go's own,
// older generated code; they are converted to the current API first.
func toJSON(m interface{}) (json.RawMessage, error) {
	var msg proto.Message
	switch v := m.(type) {
	case proto.Message:
		msg = v
	case protoiface.MessageV1:
		msg = protoimpl.X.ProtoMessageV2Of(v)
	default:
		return nil, fmt.Errorf("not a proto message: %T", m)
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(msg)
	if err != nil {
		return nil, err
	}
	// protojson's output is deliberately unstable in white space; compact it to one line.
	var out json.RawMessage
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func main() {
	timeout := flag.Duration("timeout", 20*time.Second, "bound on connecting plus the call")
	flag.Usage = usage
	flag.Parse()
	if flag.NArg() < 2 {
		usage()
	}
	target, cmd, args := flag.Arg(0), flag.Arg(1), flag.Args()[2:]
	switch cmd {
	case "ping", "quiesce", "thaw", "status", "metrics", "health":
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", cmd)
		usage()
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// No WithBlock: the first call connects, bounded by ctx (wait-for-ready off, so a refused
	// connection fails the call as UNAVAILABLE instead of waiting out the deadline).
	conn, err := grpc.Dial(target, grpc.WithInsecure())
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", target, err)
		os.Exit(2)
	}
	defer conn.Close()

	res := result{Cmd: cmd, Target: target}
	resp, err := call(ctx, conn, cmd, args)
	if err != nil {
		st := status.Convert(err)
		res.Code = st.Code().String()
		res.CodeNum = uint32(st.Code())
		res.Message = st.Message()
	} else {
		res.OK = true
		if res.Response, err = toJSON(resp); err != nil {
			fmt.Fprintf(os.Stderr, "render %s response: %v\n", cmd, err)
			os.Exit(2)
		}
	}
	line, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintf(os.Stderr, "render result: %v\n", err)
		os.Exit(2)
	}
	fmt.Println(string(line))
	if !res.OK {
		os.Exit(1)
	}
}
