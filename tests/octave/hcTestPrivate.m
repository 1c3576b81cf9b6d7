function varargout = hcTestPrivate(name, varargin)
    % Call the toolbox's internal helper NAME from matlab/private (tests only).
    %   [...] = hcTestPrivate(NAME, ARGS...) runs NAME(ARGS...). MATLAB and Octave let only the files of
    %   the toolbox folder see its private folder, so the tests step into that folder for the call.
    folder = fullfile(fileparts(which('dlhessian')), 'private');
    here = cd(folder);
    restore = onCleanup(@() cd(here));
    [varargout{1:nargout}] = feval(name, varargin{:});
    clear('restore');
end
