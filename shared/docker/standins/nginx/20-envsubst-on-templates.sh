#!/bin/sh
# Like the official image: render /etc/nginx/templates/*.template into /etc/nginx/conf.d,
# substituting only variables that are defined, so nginx's own $host, $uri... survive.
template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"

if [ -d "$template_dir" ]; then
    if [ ! -w "$output_dir" ]; then
        echo "$0: ERROR: $template_dir exists, but $output_dir is not writable" >&2
    else
        defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
        find "$template_dir" -follow -type f -name "*$suffix" | while read -r template; do
            relative="${template#"$template_dir"/}"
            mkdir -p "$output_dir/$(dirname "$relative")"
            envsubst "$defined" <"$template" >"$output_dir/${relative%"$suffix"}"
        done
    fi
fi
