# Shared by the vnet Vagrant demos (vagrant/<mode>/Vagrantfile). Each demo's vnet.yaml is the
# lab: VM names, memory, NIC models, MACs and addresses come from it, and `vnet verify
# --vagrant DIR` checks the running machines against the same file.
require "digest"
require "yaml"

module VnetDemo
  # VirtualBox adapter types for vnet's NIC models.
  VBOX_NIC_TYPE = { "virtio" => "virtio", "e1000" => "82540EM" }.freeze

  def self.lab(dir)
    YAML.safe_load(File.read(File.join(dir, "vnet.yaml")))
  end

  # The network's host address (.1: libvirt's and VirtualBox's host/router address).
  def self.first_host(subnet)
    subnet.split("/")[0].sub(/\.0$/, ".1")
  end

  def self.prefix(subnet)
    subnet.split("/")[1]
  end

  # Vagrant's management NIC (adapter 1) gets a fixed MAC so the guest can be told about it.
  def self.mgmt_mac(demo, vm)
    "52:54:00:" + Digest::SHA256.hexdigest("vnet-demo/#{demo}/#{vm}")[0, 6].scan(/../).join(":")
  end

  # The tiny image configures a NIC only when the kernel command line names its MAC
  # (vnet.if=MAC,dhcp|static,...). The box's Vagrantfile defines VnetTinyBox.cmdline, which
  # adds the box's console settings and SSH key; Vagrant loads it after it has read the box
  # name from the project's Vagrantfile, so this is called only once the box is known.
  def self.cmdline(*params)
    defined?(VnetTinyBox) ? VnetTinyBox.cmdline(*params) : params.join(" ")
  end

  # A libvirt private network for the demo's one lab NIC: vnet (not Vagrant) configures the
  # guest side, from the kernel command line, so auto_config is off and DHCP is not needed.
  def self.libvirt_network(override, dir, nic, forward_mode)
    override.vm.network :private_network, ip: nic["ip"], mac: nic["mac"], auto_config: false,
      libvirt__network_name: "vnet-demo-#{File.basename(dir)}", libvirt__forward_mode: forward_mode,
      libvirt__dhcp_enabled: false, libvirt__model_type: nic["model"]
  end

  # The vnet.if value of a statically addressed NIC, with an optional default gateway.
  def self.static_if(nic, subnet, gateway = nil)
    ["#{nic["mac"]},static,#{nic["ip"]}/#{prefix(subnet)}", gateway].compact.join(",")
  end

  # VirtualBox cannot boot a kernel file: the box boots an ISO whose command line names the VM
  # and its NICs. The box's Vagrantfile writes each machine's own copy and attaches it
  # (VnetTinyBox.virtualbox); if_params are the same vnet.if values the libvirt side gets.
  # Adapter 1 is Vagrant's NAT (the box's base MAC, DHCP, no default route); the lab NIC is 2.
  def self.virtualbox_machine(vb, dir, vm, *if_params)
    vb.memory = vm["memory"] || 128
    return unless defined?(VnetTinyBox) && VnetTinyBox.respond_to?(:virtualbox)
    VnetTinyBox.virtualbox(vb, dir, vm["name"], *if_params)
  end

  # The libvirt settings every demo machine shares (the console goes to .vagrant/VM.serial.log). if_params: the vnet.if values of the lab
  # NICs. The management NIC gets DHCP and no default route: it must not carry a probe.
  # dir: the demo's directory (its name names the demo's networks and MACs).
  def self.libvirt_machine(lv, dir, vm, *if_params)
    demo = File.basename(dir)
    model = vm["nics"][0]["model"]
    lv.memory = vm["memory"] || 128
    # vagrant-libvirt 0.11 adds an iommu driver option when the VM-wide model is virtio, and
    # libvirt refuses it on an e1000: so all NICs of a VM (management too) share its model.
    lv.nic_model_type = model
    if model == "e1000"   # as vnet's own domains (drivers/libvirt/render.py qemu_args): link up at once
      lv.qemuargs value: "-global"
      lv.qemuargs value: "e1000.autonegotiation=off"
    end
    lv.management_network_mac = mgmt_mac(demo, vm["name"])
    lv.cmd_line = cmdline("vnet.host=#{vm["name"]}", "vnet.if=#{mgmt_mac(demo, vm["name"])},dhcp",
                          *if_params.map { |p| "vnet.if=#{p}" })
    lv.serial type: "file",
              source: { path: File.join(dir, ".vagrant", "#{vm["name"]}.serial.log") }
  end
end
