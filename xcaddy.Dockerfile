# Caddy with the apic_auth module, built with xcaddy from this checkout.
#
#   docker build -f xcaddy.Dockerfile -t apic-auth-proxy .
#   docker run --rm -p 127.0.0.1:9080:9080 -e APIC_SERVER=... -e APIC_REALM=... \
#     -e APIC_USERNAME=... -e APIC_PASSWORD=... -e APIC_CLIENT_ID=... -e APIC_CLIENT_SECRET=... \
#     -v $PWD/Caddyfile:/etc/caddy/Caddyfile:ro apic-auth-proxy
#
# No secret is baked in: credentials come from the environment or mounted
# files at run time. CADDY_VERSION is the Caddy version in go.mod (CI
# checks that they agree, and runs the same xcaddy line on the checkout).
ARG CADDY_VERSION=2.11.9

FROM caddy:${CADDY_VERSION}-builder AS builder
ARG CADDY_VERSION
COPY . /src
# The module's root package imports caddymodule; "@v0.0.0=/src" builds it
# from the copied source without asking a module proxy for it. The Redis
# storage module (the version in go.mod; CI checks) holds a fleet's shared
# session.
RUN xcaddy build v${CADDY_VERSION} --with github.com/apic-tools/apic-auth-proxy@v0.0.0=/src --with github.com/pberkel/caddy-storage-redis@v1.8.1 --output /usr/bin/caddy
RUN /usr/bin/caddy list-modules | grep -qx 'http.handlers.apic_auth' && /usr/bin/caddy list-modules | grep -qx 'caddy.storage.redis'

FROM caddy:${CADDY_VERSION}
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
# Its own name too, as deploy/ and README run it: apic-auth-proxy status ...
RUN ln -s caddy /usr/bin/apic-auth-proxy
