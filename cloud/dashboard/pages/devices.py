from cloud.dashboard.ui import context
from cloud.dashboard.views.devices import render

render(context())
