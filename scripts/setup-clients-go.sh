#!/usr/bin/env bash
# One-time (and idempotent) set-up for the Go conformance client (tests/clients/go,
# tests/tests/client_go.rs): Debian 12's own Go tool chain and Go gRPC, used offline in GOPATH
# mode against /usr/share/gocode. Nothing is fetched from the Go module proxy.
#
#   golang-go                            go 1.19
#   protobuf-compiler                    protoc 3.21
#   protoc-gen-go                        protoc-gen-go 1.28 (google.golang.org/protobuf, API v2)
#   protoc-gen-go-grpc                   protoc-gen-go-grpc of grpc-go 1.33 (SupportPackageIsVersion7)
#   golang-google-grpc-dev               google.golang.org/grpc 1.33.3
#   golang-google-protobuf-dev           google.golang.org/protobuf 1.28.1 (what protoc-gen-go's
#                                        output imports)
#   golang-github-golang-protobuf-1-5-dev  github.com/golang/protobuf 1.5, built on the above;
#                                        named here because golang-google-grpc-dev's first
#                                        alternative, 1.3, predates API v2 messages
#
# When everything is installed it only checks (a few dpkg-query calls).
set -euo pipefail

apt_pkgs=(golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
          golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev)
"$(dirname "$0")/apt-ensure.sh" setup-clients-go "${apt_pkgs[@]}"
