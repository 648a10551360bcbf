# The edge proxy under Nomad: traefik supervised by handoff, one per edge
# node (raw_exec, because handoff must change the node's keepalived track
# file or CARP demote counter, and bind the proxy's ports on the host).
#
#   nomad job run config/nomad/edge-proxy.nomad.hcl
#
# What a stop looks like (nomad job stop, a new version, nomad node drain):
# Nomad sends kill_signal (SIGINT) to handoff only; handoff demotes the node,
# waits until the peer holds the floating IP, stops traefik (SIGTERM), and
# exits. Nomad SIGKILLs the task after kill_timeout, so kill_timeout must
# cover handoff's whole stop budget (see below).

job "edge-proxy" {
  datacenters = ["dc1"]
  type        = "service"

  group "edge" {
    # One per edge node: two proxies on one node would share its floating IP.
    count = 2

    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # Only the nodes that carry the floating IP (keepalived installed and
    # configured with config/keepalived.conf; client meta edge = "true").
    constraint {
      attribute = "${meta.edge}"
      value     = "true"
    }

    network {
      port "http" {
        static = 80
      }
      port "https" {
        static = 443
      }
      # handoff's HTTP endpoint, on 127.0.0.1 only ([http] listen below):
      # /status and /metrics are not for the network, and the check below
      # runs on this node. Scrape /metrics through something on the node (a
      # Prometheus agent, or a traefik route with its own access control).
      port "handoff" {
        static = 9480
      }
    }

    # Nomad's view of the task: /healthz is 200 while the proxy runs and
    # handoff's loop answers. The node's role goes to Consul from handoff
    # itself ([consul] below: master.edge.service.consul).
    service {
      name = "edge-handoff"
      port = "handoff"
      # The check runs at the service's address (Nomad >= 1.3: the check
      # takes it when it sets no address_mode of its own), and the Consul
      # agent that runs it is this node's, so loopback reaches handoff.
      address = "127.0.0.1"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    # handoff exits with the proxy's status; Nomad restarts the task (leave
    # handoff's own `restart` at "never" under Nomad).
    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    task "traefik" {
      driver = "raw_exec"

      # Nomad's default, written out: SIGINT goes to handoff's pid only.
      kill_signal = "SIGINT"
      # `handoff check` prints the stop budget of the config below:
      # failover_timeout 10s + settle 0s + stop_timeout 10s + exit 1.3s
      # = 21.3s. kill_timeout leaves headroom above it. Nomad caps
      # kill_timeout at the client's max_kill_timeout (default 30s): raise
      # that in the client config if the budget grows past it.
      # Verify with: handoff --config handoff.toml check --kill-timeout 25s
      kill_timeout = "25s"

      config {
        command = "/usr/bin/handoff"
        # `run` first: keepalived's vrrp_track_process (weight 0) matches
        # `/usr/bin/handoff run`, so the node is FAULT whenever no
        # handoff runs (config/keepalived.conf). On Linux Nomad kills the
        # task's whole cgroup, handoff's sentinel included: there that
        # tracking is the net after a kill -9.
        args = [
          "run", "--config", "${NOMAD_TASK_DIR}/handoff.toml", "--",
          "/usr/local/bin/traefik", "--configfile", "${NOMAD_TASK_DIR}/traefik.yml",
        ]
      }

      env {
        # raw_exec tasks inherit the Nomad agent's environment; under
        # systemd Type=notify that includes NOTIFY_SOCKET, which is not ours.
        NOTIFY_SOCKET = ""
      }

      # handoff's own config: a change restarts the task (through the same
      # stop sequence).
      template {
        destination = "local/handoff.toml"
        change_mode = "restart"
        data        = <<EOT
[proxy]
preset = "traefik"
stop_timeout = "10s"
exit_code_map = { 143 = 0 }
restart = "never"

[proxy.health]
http = "http://127.0.0.1:8082/ping"
interval = "1s"
timeout = "500ms"

[failover]
backend = "keepalived"
failover_timeout = "10s"

[failover.keepalived]
track_file = "/var/lib/handoff/keepalived.track"
vip = ["192.0.2.10"]
handover = "graceful"

[consul]
service = "edge"
service_id = "edge-{{ env "node.unique.name" }}"
ttl = "10s"
confirm_peer = true

[control]
socket = "/run/handoff/handoff.sock"
state_dir = "/var/lib/handoff"

[http]
listen = "127.0.0.1:{{ env "NOMAD_PORT_handoff" }}"

[log]
format = "json"
EOT
      }

      # traefik's static config: a change needs a restart.
      template {
        destination = "local/traefik.yml"
        change_mode = "restart"
        data        = <<EOT
entryPoints:
  web:
    address: ":{{ env "NOMAD_PORT_http" }}"
  websecure:
    address: ":{{ env "NOMAD_PORT_https" }}"
  ping:
    address: "127.0.0.1:8082"
ping:
  entryPoint: ping
lifeCycle:
  requestAcceptGraceTimeout: "0s"
  graceTimeOut: "8s"
providers:
  file:
    filename: "{{ env "NOMAD_TASK_DIR" }}/dynamic.yml"
    watch: true
EOT
      }

      # Routes. A reload goes through handoff, never around it. traefik
      # needs none: its preset drops reloads (SIGHUP would terminate
      # traefik; its file provider reloads by itself), so the SIGHUP below
      # is only logged. With nginx, haproxy or caddy in traefik's place, a
      # template change can reload the proxy in either of two ways:
      #
      # - change_mode = "signal" with SIGHUP, as below: handoff checks the
      #   new config, reloads the proxy and waits for its confirmation
      #   (handoff(8), SIGNALS), and only logs the outcome.
      # - change_mode = "script" (Nomad 1.4 and later): Nomad runs
      #   `handoff reload`, which does the same and exits 1 when the reload
      #   fails; Nomad records that as a task event ("Template ran script
      #   ... but it exited with code: 1"):
      #
      #     change_mode = "script"
      #     change_script {
      #       command = "/usr/bin/handoff"
      #       # No --config: `handoff reload` finds the agent at the default
      #       # socket, which the config above keeps (/run/handoff/handoff.sock;
      #       # an /etc/handoff.toml on the node, if any, must agree).
      #       args = ["reload"]
      #       # handoff reload waits up to twice reload_timeout (15s) + 10s
      #       # (a request during a reload waits for it and the next one);
      #       # Nomad's default of 5s would cut it off.
      #       timeout = "45s"
      #       fail_on_error = false
      #     }
      #
      #   fail_on_error = false (Nomad's default), on purpose. true makes
      #   Nomad kill the task when the script fails, and a failed reload
      #   means the proxy refused the new config while it still serves the
      #   old one: the kill would move the floating IP off a healthy node,
      #   and when Nomad starts the task again, the proxy would start with
      #   the config it just refused and fail. Both nodes render the same
      #   template, so both would go down. Alert on the event or on
      #   handoff_reload_failures_total instead (docs/operations.md,
      #   "Reloads"). With traefik, keep "signal": its preset refuses
      #   `handoff reload`, which would fail on every change.
      template {
        destination   = "local/dynamic.yml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<EOT
http:
  routers:
    app:
      rule: "PathPrefix(`/`)"
      service: app
  services:
    app:
      loadBalancer:
        servers:
{{- range service "app" }}
          - url: "http://{{ .Address }}:{{ .Port }}"
{{- end }}
EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
