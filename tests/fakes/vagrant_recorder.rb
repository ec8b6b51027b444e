# A recording stand-in for Vagrant: loads a Vagrantfile and prints, as JSON, what it
# configured per machine and provider. Used by tests/unit/test_vagrant_demos.py:
#   ruby vagrant_recorder.rb path/to/Vagrantfile
# Provider blocks run at once with a fresh provider object and an `override` config, as
# Vagrant runs them (later and merged, which makes no difference to what is recorded).
require "json"

# The box's Vagrantfile defines this; here it marks where the box's part of the line goes.
module VnetTinyBox
  def self.cmdline(*params)
    ["<box cmdline and key>", *params].join(" ")
  end

  # VirtualBox: the box writes the machine's own boot ISO; recorded as a call on `vb`.
  def self.virtualbox(vb, _dir, name, *if_params)
    vb.vnet_boot_iso(name, *if_params)
  end
end

class Settings
  def initialize
    @values = {}
    @calls = []
  end

  def method_missing(name, *args, **opts, &block)
    key = name.to_s
    if key.end_with?("=")
      @values[key.chomp("=")] = args[0]
    else
      @calls << { "method" => key, "args" => args, "options" => opts }
    end
  end

  def respond_to_missing?(*)
    true
  end

  def to_h
    { "settings" => @values, "calls" => @calls }
  end
end

class VmSettings < Settings
  def initialize
    super
    @networks = []
    @providers = {}
    @machines = {}
  end

  def network(type, **opts)
    @networks << { "type" => type.to_s, "options" => opts }
  end

  def provider(name, &block)
    provider = Settings.new
    override = Config.new
    block.call(provider, override)
    @providers[name.to_s] = { "provider" => provider.to_h, "override" => override.to_h }
  end

  def define(name, **_opts, &block)
    machine = Config.new
    block&.call(machine)
    @machines[name.to_s] = machine.to_h
  end

  def to_h
    super.merge("networks" => @networks, "providers" => @providers, "machines" => @machines)
  end
end

class Trigger
  def initialize
    @triggers = []
  end

  %w[before after].each do |moment|
    define_method(moment) do |*actions, **_opts, &block|
      t = Settings.new
      block&.call(t)
      @triggers << { "moment" => moment, "actions" => actions.map(&:to_s), "trigger" => t.to_h }
    end
  end

  def to_h
    @triggers
  end
end

class Config
  def vm
    @vm ||= VmSettings.new
  end

  def ssh
    @ssh ||= Settings.new
  end

  def trigger
    @trigger ||= Trigger.new
  end

  def to_h
    { "vm" => vm.to_h, "ssh" => ssh.to_h, "trigger" => trigger.to_h }
  end
end

module Vagrant
  CONFIGS = []

  def self.configure(_version)
    config = Config.new
    yield config
    CONFIGS << config
  end
end

path = File.expand_path(ARGV.fetch(0))
Dir.chdir(File.dirname(path)) { load path }
puts JSON.pretty_generate(Vagrant::CONFIGS.map(&:to_h))
