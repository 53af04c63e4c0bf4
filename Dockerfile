# One image with every service binary; each Deployment runs its own.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --uid 10001 --user-group --no-create-home oms
COPY --from=build /src/target/release/oms-* /usr/local/bin/
USER 10001:10001
