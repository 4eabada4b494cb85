# Renders one BOSH job template the way the director does, for the release tests.
#
#   ruby erb_render.rb JOB_DIR TEMPLATE CONTEXT_JSON
#
# CONTEXT_JSON holds {"properties": <the job's manifest properties>, "spec": <instance
# spec: name, id, index, address, ip, deployment, az, bootstrap, networks, ...>}. As the
# director does, every property the job spec declares gets the manifest value or else the
# spec default, and only declared properties are visible; the template then sees `p`,
# `if_p` and `spec` (bosh-template's EvaluationContext). The result goes to stdout.
require "erb"
require "json"
require "ostruct"
require "yaml"

class UnknownProperty < StandardError; end

# The director's properties for one job: declared names only, manifest value or default.
def job_properties(job_spec, manifest_properties)
  (job_spec["properties"] || {}).each_with_object({}) do |(name, definition), result|
    value = lookup(manifest_properties, name)
    value = (definition || {})["default"] if value.nil?
    store(result, name, value)
  end
end

def lookup(properties, dotted_name)
  dotted_name.split(".").reduce(properties) do |node, key|
    return nil unless node.is_a?(Hash) && node.key?(key)
    node[key]
  end
end

def store(properties, dotted_name, value)
  *parents, leaf = dotted_name.split(".")
  node = parents.reduce(properties) { |current, key| current[key] ||= {} }
  node[leaf] = value
end

def open_struct(value)
  case value
  when Hash then OpenStruct.new(value.transform_values { |v| open_struct(v) })
  when Array then value.map { |v| open_struct(v) }
  else value
  end
end

# What `if_p` returns: `.else` / `.else_if_p` run only when the `if_p` block did not.
class ElseBlock
  def initialize(context, active)
    @context = context
    @active = active
  end

  def else
    yield if @active
  end

  def else_if_p(*names, &block)
    return self unless @active
    @context.if_p(*names, &block)
  end
end

class EvaluationContext
  attr_reader :spec

  def initialize(properties, instance_spec)
    @properties = properties
    @spec = open_struct(instance_spec.merge("properties" => properties))
  end

  def p(*args)
    names = Array(args[0])
    names.each do |name|
      value = lookup(@properties, name)
      return value unless value.nil?
    end
    return args[1] if args.length == 2
    raise UnknownProperty, "Can't find property '#{names.join("', '")}'"
  end

  def if_p(*names)
    values = names.map { |name| lookup(@properties, name) }
    return ElseBlock.new(self, true) if values.any?(&:nil?)
    yield(*values)
    ElseBlock.new(self, false)
  end

  def binding_for_template
    binding
  end
end

job_dir, template, context_file = ARGV
context = JSON.parse(File.read(context_file))
job_spec = YAML.safe_load(File.read(File.join(job_dir, "spec")))
properties = job_properties(job_spec, context.fetch("properties", {}))
evaluation = EvaluationContext.new(properties, context.fetch("spec", {}))
source = File.read(File.join(job_dir, "templates", template))
begin
  print ERB.new(source, trim_mode: "-").result(evaluation.binding_for_template)
rescue UnknownProperty => e
  warn "#{template}: #{e.message}"
  exit 1
end
