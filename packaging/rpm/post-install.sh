getent group smtp-auth-proxy >/dev/null || groupadd -r smtp-auth-proxy
getent passwd smtp-auth-proxy >/dev/null || \
    useradd -r -g smtp-auth-proxy -d /var/lib/smtp-auth-proxy -s /sbin/nologin smtp-auth-proxy
install -d -o smtp-auth-proxy -g smtp-auth-proxy -m 0750 /var/lib/smtp-auth-proxy
install -d -o smtp-auth-proxy -g smtp-auth-proxy -m 0750 /var/spool/smtp-auth-proxy
install -d -o smtp-auth-proxy -g smtp-auth-proxy -m 0750 /var/log/smtp-auth-proxy
if [ ! -e /var/lib/smtp-auth-proxy/upstreams.sqlite ]; then
    sqlite3 /var/lib/smtp-auth-proxy/upstreams.sqlite < /usr/share/smtp-auth-proxy/upstreams.sql
    chown smtp-auth-proxy:smtp-auth-proxy /var/lib/smtp-auth-proxy/upstreams.sqlite
fi
systemctl daemon-reload >/dev/null 2>&1 || true
