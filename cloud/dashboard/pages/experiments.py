from cloud.dashboard.ui import context
from cloud.dashboard.views.experiments import render

render(context())
