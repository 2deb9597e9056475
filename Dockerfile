# Image holding both shardgate binaries. It starts from scratch and copies the
# static (CGO_ENABLED=0) binaries that `make build` writes to bin/, so building it
# pulls nothing: run `make image`, which builds the binaries first.
# The binaries need no shell, CA bundle or time zone data.
FROM scratch

COPY bin/gateway bin/worker /usr/local/bin/

# A numeric UID and GID so Kubernetes can check runAsNonRoot without a passwd
# file; 65532 is the conventional "nonroot" ID of distroless images.
USER 65532:65532

# Gateway: CoAP (UDP), Diameter (TCP), admin HTTP. Worker: link, admin HTTP.
# Both: Serf gossip on TCP and UDP.
EXPOSE 5683/udp 3868/tcp 8080/tcp 9000/tcp 8081/tcp 7946/tcp 7946/udp

# Run the gateway unless a command is given; workers run /usr/local/bin/worker.
CMD ["/usr/local/bin/gateway"]
