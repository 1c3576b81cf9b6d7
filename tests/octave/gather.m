function varargout = gather(varargin)
    % Test double of MATLAB's gather (https://www.mathworks.com/help/matlab/ref/gather.html): for arrays
    % that are neither gpuArray, distributed nor tall, gather(X) returns X unchanged. Octave has no gather.
    varargout = varargin;
end
