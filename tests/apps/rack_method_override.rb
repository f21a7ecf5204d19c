# A Rails app's method override as Rails runs it: Rack::MethodOverride (Debian's ruby-rack), which takes a POST
# whose form holds `_method` for that method, in front of an app that answers the method it was given as JSON.
# Started by tests/support/frameworks.rs: ruby rack_method_override.rb PORT
require 'rack'
require 'rack/handler/webrick'
require 'json'

port = Integer(ARGV.fetch(0))
app = Rack::MethodOverride.new(lambda { |env|
  [200, { 'content-type' => 'application/json' }, [JSON.generate(method: env['REQUEST_METHOD'])]]
})
Rack::Handler::WEBrick.run(app, Host: '127.0.0.1', Port: port, AccessLog: [], Logger: WEBrick::Log.new(nil, 0))
