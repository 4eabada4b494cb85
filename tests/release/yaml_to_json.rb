# Prints a YAML file as JSON, so the release tests read specs and manifests with the YAML
# parser of the Ruby that renders the templates (the tests need no Python YAML library).
require "json"
require "yaml"

puts JSON.generate(YAML.safe_load(File.read(ARGV[0]), aliases: true))
